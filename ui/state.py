"""The backend object for the pages, created once per server process."""
from __future__ import annotations

import time
from typing import Any, Callable

import streamlit as st

from backend import get_backend
from backend.api import Backend, SconesError
from backend.settings import load_settings


@st.cache_resource(show_spinner=False)
def backend() -> Backend:
    return get_backend(load_settings())


def kept(key: str, default: object, follow: object = None) -> None:
    """Give the widget `key` its last value when its page is shown again (Streamlit drops the state of a
    widget whose page is not shown), or `default` the first time. With `follow`, the value starts over
    from `default` whenever `follow` (what the default is taken from) changed since it was last seen:
    a threshold slider follows the workflow's threshold. Create the widget with this key and no default."""
    shadow, seen = f"_kept:{key}", f"_kept_follow:{key}"
    if follow is not None and st.session_state.get(seen, follow) != follow:
        st.session_state.pop(shadow, None)
        st.session_state.pop(key, None)
    st.session_state[seen] = follow
    value = st.session_state[key] if key in st.session_state else st.session_state.get(shadow, default)
    # Assigned on every run, not only when Streamlit dropped it: a value assigned before its widget is drawn is
    # sent to the browser, which otherwise keeps its own. An edit's rerun that crossed a page link's click (the
    # click is the field's blur) left the browser showing a blank field while the server held the edit.
    st.session_state[key] = value
    st.session_state[shadow] = value


def kept_value(key: str, default: object) -> object:
    """The value of the widget `key` kept with `kept()`, before the widget is drawn again: on a page shown
    again, Streamlit has dropped the widget's own, and the kept one is what it will show."""
    return st.session_state[key] if key in st.session_state else st.session_state.get(f"_kept:{key}", default)


def remember(key: str) -> None:
    """`on_change` of a widget kept with `kept()`: keep its new value at once, even when the page is left
    before it is drawn again (a field edited, then a page link clicked: the click's run is another page's)."""
    if key in st.session_state:
        st.session_state[f"_kept:{key}"] = st.session_state[key]


SAME_PRESS_SECONDS = 2.0  # a second press of the same request this soon is a double-click


def second_press(key: str, request: object, running: Callable[[Any], bool] | None = None) -> Any:
    """A press while the page reruns arrives as a second click. When this one repeats the last `request` (kept
    under `key`) within 2 s, or while what that press started still runs (`running(started)`), it is that one
    start: returns what it started (True when nothing is known yet); else None, and the caller goes ahead."""
    last = st.session_state.get(key)
    if last is None or last["request"] != request:
        return None
    if time.monotonic() - last["at"] < SAME_PRESS_SECONDS or (
            running is not None and last["started"] is not None and running(last["started"])):
        return last["started"] if last["started"] is not None else True
    return None


def pressed(key: str, request: object, started: Any = None) -> None:
    """Keep a press that starts (or started) something, for `second_press`."""
    st.session_state[key] = {"at": time.monotonic(), "request": request, "started": started}


def press_refused(key: str) -> None:
    """Nothing started: a press again is a new try."""
    st.session_state.pop(key, None)


def watch_for_changes(key: str, signature: Callable[[], Any], drawn_from: Any, aws: bool, idle: bool = True) -> None:
    """Redraw the page when what it was drawn from changes elsewhere (the CLI, another tab), while it sits idle.

    `drawn_from` is `signature()` as this run of the page read it; a fragment reads it again every 5 s (every
    minute on AWS, whose List calls are rate-limited) and reruns the whole page when it differs. Reading
    nothing is drawn, so a quiet page costs a few queries and no redraw. Call it on every run of the page, with
    `idle` False while the page polls by itself: that stops the timer (a watcher the run skipped kept firing
    with the signature of an older run, and redrew the page in the middle of a live chart)."""
    st.session_state[key] = drawn_from
    st.session_state[f"{key}:fresh"] = True  # the watcher's first run, inside this one, need not read again

    @st.fragment(run_every=(60.0 if aws else 5.0) if idle else None)
    def watcher() -> None:
        if not idle:
            return
        if st.session_state.pop(f"{key}:fresh", False):
            return
        try:
            now = signature()
        except SconesError:
            return  # the page's own sections say what failed; the next look tries again
        if now != st.session_state.get(key):
            st.rerun()

    watcher()
