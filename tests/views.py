"""Views that use the hub context the way an application would (sync and async)."""

from __future__ import annotations

import asyncio
import json

from django.contrib.auth import get_user_model, logout
from django.contrib.sessions.models import Session
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from signalr_groups import ClientResultError, get_hub_context
from tests.hubs import InteropHub


@csrf_exempt
def context_ask(request: HttpRequest) -> HttpResponse:
    """A plain view awaiting a client result through the hub context: the client's answer, or the error."""
    body = json.loads(request.body)
    proxy = get_hub_context(InteropHub).sync.clients.client(body["connection_id"])
    try:
        return JsonResponse({"result": proxy.invoke(body["target"], *body.get("args", []), timeout=body["timeout"])})
    except ClientResultError as exc:
        return JsonResponse({"error": type(exc).__name__, "message": str(exc)})


@csrf_exempt
def context_send(request: HttpRequest) -> HttpResponse:
    """A plain (sync) view sending through ``get_hub_context(...).sync``."""
    body = json.loads(request.body)
    clients = get_hub_context(InteropHub).sync.clients
    kind, message = body["kind"], body["message"]
    if kind == "all":
        clients.all.send("Receive", "ctx-all", message)
    elif kind == "group":
        clients.group(body["name"]).send("Receive", "ctx-group", message)
    elif kind == "groups":
        clients.groups(body["names"]).send("Receive", "ctx-groups", message)
    elif kind == "group_except":
        clients.group_except(body["name"], body["exclude"]).send("Receive", "ctx-group_except", message)
    elif kind == "user":
        clients.user(body["name"]).send("Receive", "ctx-user", message)
    elif kind == "users":
        clients.users(body["names"]).send("Receive", "ctx-users", message)
    elif kind == "client":
        clients.client(body["name"]).send("Receive", "ctx-client", message)
    elif kind == "clients":
        clients.clients(body["names"]).send("Receive", "ctx-clients", message)
    elif kind == "all_except":
        clients.all_except(body["exclude"]).send("Receive", "ctx-all_except", message)
    else:
        return JsonResponse({"error": "unknown kind"}, status=400)
    return JsonResponse({"ok": True})


async def context_group(request: HttpRequest) -> HttpResponse:
    """An async view adding or removing a connection to/from a group by id."""
    body = json.loads(request.body)
    groups = get_hub_context(InteropHub).groups
    if body["action"] == "add":
        ok = await groups.add_to_group(body["connection_id"], body["group"])
    else:
        ok = await groups.remove_from_group(body["connection_id"], body["group"])
    return JsonResponse({"ok": ok})


# What @csrf_exempt sets: before Django 5.0 the decorator turns an async view into a sync one.
context_group.csrf_exempt = True  # type: ignore[attr-defined]


@csrf_exempt
def logout_view(request: HttpRequest) -> HttpResponse:
    """Log the session out, as Django's LogoutView does (without its CSRF dance)."""
    logout(request)
    return JsonResponse({"ok": True})


@csrf_exempt
def account_action(request: HttpRequest) -> HttpResponse:
    """Change an account inside the server process, as an admin or a view would."""
    body = json.loads(request.body)
    user = get_user_model().objects.get(username=body["username"])
    action = body["action"]
    if action == "password":
        user.set_password("a-new-password")
        user.save()
    elif action == "deactivate":
        user.is_active = False
        user.save()
    elif action == "delete":
        user.delete()
    elif action == "clear_sessions":
        for session in Session.objects.all():
            if session.get_decoded().get("_auth_user_id") == str(user.pk):
                session.delete()
    elif action == "disconnect":
        get_hub_context(InteropHub).sync.disconnect_user(user, reason="Disconnected by an administrator.")
    else:
        return JsonResponse({"error": "unknown action"}, status=400)
    return JsonResponse({"ok": True})


@csrf_exempt
def grant_action(request: HttpRequest) -> HttpResponse:
    """Change grants inside the server process through the ORM, as application code would."""
    from django.contrib.auth.models import Group

    from signalr_groups.models import GroupGrant

    body = json.loads(request.body)
    action = body["action"]
    if action == "delete":
        GroupGrant.objects.get(pk=body["grant"]).delete()
    elif action == "revoke":
        GroupGrant.objects.get(pk=body["grant"]).revoke(reason="revoked by the ORM")
    elif action == "leave_auth_group":
        get_user_model().objects.get(username=body["username"]).groups.remove(Group.objects.get(name=body["group"]))
    else:
        return JsonResponse({"error": "unknown action"}, status=400)
    return JsonResponse({"ok": True})


#: How many times :func:`slow_view` has started (in-process tests that cancel a request mid-view).
slow_view_calls: list[int] = []


async def slow_view(request: HttpRequest) -> HttpResponse:
    """An async view that takes a minute: a request still in flight when the server stops."""
    slow_view_calls.append(1)
    await asyncio.sleep(60)
    return HttpResponse("late")
