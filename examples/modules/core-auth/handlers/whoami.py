"""GET /whoami: the calling user as the platform sees them."""


def handler(request):
    user = request.user
    return {"username": user.username, "role": user.role, "permissions": sorted(user.permissions)}
