"""GET /notifications: the recorded notifications, newest first."""


def handler(request):
    limit = min(int(request.query.get("limit", "100")), 1000)
    page = request.store.list("notification/", limit=1000)
    items = [entry.value for entry in reversed(page.items)][:limit]
    return {"items": items, "total": len(page.items)}
