from django.http import HttpRequest

from imbue import llm


def product(request: HttpRequest) -> dict:
    """The model status line every page shows (offline engines are labelled honestly)."""
    return {"llm_connected": llm.is_configured(), "llm_status": llm.status_label()}
