from django.http import HttpRequest

from imbue import llm


def product(request: HttpRequest) -> dict:
    """The model status line every page shows (offline engines, and a model that is connected
    but not answering because of its set-up, are labelled honestly)."""
    return {"llm_connected": llm.is_working(), "llm_status": llm.status_label()}
