"""GET /greet/{who}: greet someone with the configured greeting."""


def handler(request):
    greeting = request.config.get("greeting", "Hello")
    return {"message": f"{greeting}, {request.path_params['who']}!", "hasApiKey": bool(request.config.get("apiKey"))}
