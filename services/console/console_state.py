"""The console's session: the logged-in SDK client, the selected project, and one error boundary.

Pages reach the platform only through the :class:`selfserve.client.Client` kept here, and only
through :func:`call` or :func:`load`, which show a :class:`selfserve.errors.SelfServeError`'s
message instead of a traceback. Nothing here decides policy: the API does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import streamlit as st

from selfserve import schemas
from selfserve.client import Client
from selfserve.errors import SelfServeError, ServiceUnavailable, Unauthenticated

P = ParamSpec("P")
T = TypeVar("T")

CLIENT = "selfserve_client"
USER = "selfserve_user"
PROJECT = "selfserve_project"
NOTICE = "selfserve_notice"
FLASH = "selfserve_flash"
NEXT_PROJECT = "selfserve_next_project"

OWNER = "owner"
SERVICE_ROLE = "service"


# -- session --------------------------------------------------------------------------


def client() -> Client | None:
    """The logged-in client of this browser session, or None before login."""
    return st.session_state.get(CLIENT)


def user() -> schemas.UserPublic | None:
    """The logged-in user, as the server described them at login."""
    return st.session_state.get(USER)


def login(username: str, password: str) -> bool:
    """Log in against the API named by ``ClientSettings`` (``SELFSERVE_URL``).

    The token lives in this browser session only: it is never saved for the CLI.

    Returns:
        True on success; otherwise the server's message has been shown.
    """
    if not username or not password:
        st.error("Enter your user name and password.")
        return False
    c = Client()
    try:
        resp = c.login(username, password, save=False)
    except SelfServeError as e:
        c.close()
        st.error(e.message, icon=":material/error:")
        return False
    st.session_state[CLIENT] = c
    st.session_state[USER] = resp.user
    st.session_state.pop(NOTICE, None)
    return True


def logout() -> None:
    """Revoke the session's token and forget it (a button callback)."""
    c = _forget()
    if c is None:
        return
    try:
        c.logout()
    except Unauthenticated:
        pass  # the token had already expired or been revoked: the session is over either way
    except SelfServeError as e:
        st.session_state[NOTICE] = f"Signed out here, but the server could not end the session: {e.message}"
    finally:
        c.close()


def _forget() -> Client | None:
    c = st.session_state.pop(CLIENT, None)
    st.session_state.pop(USER, None)
    st.session_state.pop(PROJECT, None)
    return c


def notice() -> str | None:
    """A message for the login page, e.g. why the last session ended."""
    return st.session_state.get(NOTICE)


# -- error boundary -------------------------------------------------------------------


def call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """Call the SDK; on a platform error show its message and return None.

    An expired or revoked session sends the user back to the login form.
    """
    try:
        return fn(*args, **kwargs)
    except Unauthenticated as e:
        _session_ended(e)
    except SelfServeError as e:
        st.error(e.message, icon=":material/error:")
        return None


def attempt(fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> bool:
    """Like :func:`call`, for changes that return nothing: True if it went through."""
    try:
        fn(*args, **kwargs)
    except Unauthenticated as e:
        _session_ended(e)
    except SelfServeError as e:
        st.error(e.message, icon=":material/error:")
        return False
    return True


def load(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Like :func:`call`, for data the page cannot go on without: on an error the page stops there."""
    try:
        return fn(*args, **kwargs)
    except Unauthenticated as e:
        _session_ended(e)
    except SelfServeError as e:
        st.error(e.message, icon=":material/error:")
        st.stop()


def load_service(unavailable: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Like :func:`load`, for a platform service that may be switched off or down.

    Its 503 (:class:`selfserve.errors.ServiceUnavailable`) is no failure of the page: the page says
    ``unavailable`` and the server's reason, as information, and stops there.
    """
    try:
        return fn(*args, **kwargs)
    except ServiceUnavailable as e:
        st.info(f"{unavailable}\n\nThe platform says: {e.message}", icon=":material/power_off:")
        st.stop()
    except Unauthenticated as e:
        _session_ended(e)
    except SelfServeError as e:
        st.error(e.message, icon=":material/error:")
        st.stop()


def _session_ended(e: Unauthenticated) -> NoReturn:
    c = _forget()
    if c is not None:
        c.close()
    st.session_state[NOTICE] = f"Your session ended ({e.message}). Please sign in again."
    st.rerun()


# -- project --------------------------------------------------------------------------


def project() -> str | None:
    """The project chosen in the sidebar's switcher."""
    return st.session_state.get(PROJECT)


def project_switcher(projects: list[schemas.ProjectPublic]) -> str | None:
    """The sidebar's project selectbox; keeps the choice valid as projects come and go."""
    names = [p.name for p in projects]
    roles = {p.name: p.role for p in projects}
    wanted = st.session_state.pop(NEXT_PROJECT, None) or st.session_state.get(PROJECT)
    if not names:
        st.session_state.pop(PROJECT, None)
        st.caption("No projects yet.")
        return None
    st.session_state[PROJECT] = wanted if wanted in names else names[0]
    return st.selectbox(
        "Project",
        names,
        key=PROJECT,
        format_func=lambda n: f"{n} · {roles[n] or 'admin'}",
        help="The project every page shows. Your role in it follows the name.",
    )


def select_project(name: str) -> NoReturn:
    """Make ``name`` the selected project from the next run on (e.g. right after creating it)."""
    st.session_state[NEXT_PROJECT] = name
    st.rerun()


def require_client() -> Client:
    """The logged-in client; the page stops if there is none (app.py shows the login form then)."""
    c = client()
    if c is None:
        st.info("Sign in to use the console.", icon=":material/login:")
        st.stop()
    return c


def require_project() -> str:
    """The selected project; without one the page shows how to get one and stops."""
    name = project()
    if name is None:
        st.info(
            "You are not a member of any project yet. Create one on the Overview page, "
            "or ask a project owner to add you.",
            icon=":material/folder_off:",
        )
        st.stop()
    return name


# -- messages that outlive a rerun -----------------------------------------------------


def flash(message: str) -> NoReturn:
    """Rerun the page (to show fresh data), then say ``message`` (after a change went through)."""
    st.session_state[FLASH] = message
    st.rerun()


def show_flash() -> None:
    """Say the message :func:`flash` left, as a toast: seen wherever the page is scrolled to."""
    message = st.session_state.pop(FLASH, None)
    if message:
        st.toast(message, icon=":material/check_circle:")


# -- display --------------------------------------------------------------------------


def title(resource: str) -> str:
    """``"rpm"`` -> ``"RPM"``, ``"storage"`` -> ``"Storage"``."""
    return resource.upper() if len(resource) <= 3 else resource.replace("_", " ").capitalize()


def amount(value: float, unit: str) -> str:
    """A quota amount for people, in the units the platform's own ``shown`` texts use."""
    if unit == "bytes":
        for suffix, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
            if value >= size:
                return f"{value / size:.1f}".removesuffix(".0") + f" {suffix}"
        return f"{value:.0f} B"
    if unit == "per-minute":
        return f"{value:g}/min"
    if unit == "cores":
        return f"{value:g} cores"
    return f"{value:g}"


def duration(seconds: float | None) -> str:
    """``"12.3 s"``, ``"4m 05s"``, ``"2h 07m"``; empty for a duration not known (yet)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
