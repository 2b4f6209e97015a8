"""Streamlit helpers shared by the pages: chart builders (pure) and small widgets."""
