"""The backend object for the pages, created once per server process."""
from __future__ import annotations

import streamlit as st

from backend import get_backend
from backend.api import Backend
from backend.settings import load_settings


@st.cache_resource(show_spinner=False)
def backend() -> Backend:
    return get_backend(load_settings())
