"""The backend object for the pages, created once per server process."""
from __future__ import annotations

import streamlit as st

from backend import get_backend
from backend.api import Backend
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
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(shadow, default)
    st.session_state[shadow] = st.session_state[key]


def remember(key: str) -> None:
    """`on_change` of a widget kept with `kept()`: keep its new value at once, even when the page is left
    before it is drawn again (a field edited, then a page link clicked: the click's run is another page's)."""
    if key in st.session_state:
        st.session_state[f"_kept:{key}"] = st.session_state[key]
