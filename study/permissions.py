"""Who may see, export or change which study.

Superusers have every right on every study. Other staff have the rights a `StudyStaff` grant gives
them on that study, and none elsewhere. Everyone else (anonymous browsers, participants, accounts
without staff status) has no right on any study. Every researcher page, export and admin screen of
study data asks here; nothing else decides.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRedirect

from study.models import Study, StudyStaff


class Right(StrEnum):
    VIEW = "view"
    EXPORT = "export"
    EDIT = "edit"


FIELDS: dict[Right, str] = {
    Right.VIEW: "can_view_data",
    Right.EXPORT: "can_export",
    Right.EDIT: "can_edit_settings",
}


def is_research_staff(user: Any) -> bool:
    """An active staff account (the precondition of any right; superusers are staff too)."""
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and user.is_active
        and user.is_staff
    )


def is_all_studies(user: Any) -> bool:
    """Superusers see and do everything, without grants."""
    return is_research_staff(user) and bool(user.is_superuser)


def has_right(user: Any, study: Study | None, right: Right) -> bool:
    """Whether the user holds `right` on this study."""
    if study is None or not is_research_staff(user):
        return False
    if user.is_superuser:
        return True
    return StudyStaff.objects.filter(study=study, user=user, **{FIELDS[right]: True}).exists()


def rights_on(user: Any, study: Study) -> set[Right]:
    """Every right the user holds on this study (for showing or hiding buttons)."""
    if not is_research_staff(user):
        return set()
    if user.is_superuser:
        return set(Right)
    grant = StudyStaff.objects.filter(study=study, user=user).first()
    if grant is None:
        return set()
    return {right for right, field in FIELDS.items() if getattr(grant, field)}


def studies_for(user: Any, right: Right = Right.VIEW) -> QuerySet[Study]:
    """The studies on which the user holds `right` (none for non-staff)."""
    if not is_research_staff(user):
        return Study.objects.none()
    if user.is_superuser:
        return Study.objects.all()
    return Study.objects.filter(staff_grants__user=user, **{f"staff_grants__{FIELDS[right]}": True})


def has_any_right(user: Any, right: Right = Right.VIEW) -> bool:
    """Whether the user holds `right` on at least one study."""
    return is_all_studies(user) or studies_for(user, right).exists()


def study_or_deny(request: HttpRequest, slug: str, right: Right) -> Study:
    """The study named by the URL if the signed-in staff member holds `right` on it.

    PermissionDenied for non-staff and for staff who hold another right on the study but not
    `right`; Http404 for no such study, and for one the staff member holds no right on (the
    answer must not tell that a study of that name exists).
    """
    if not is_research_staff(request.user):
        raise PermissionDenied("Researcher pages need a staff account.")
    study = Study.objects.filter(slug=slug).first()
    held = rights_on(request.user, study) if study is not None else set()
    if not held:
        raise Http404("No such study.")
    if right not in held:
        raise PermissionDenied(f"You have no {right.value} right on this study.")
    return study


ResearchView = Callable[..., HttpResponse]


def research_view(right: Right) -> Callable[[ResearchView], Callable[..., HttpResponse]]:
    """Decorate a view taking `slug`: it receives the study instead, once `right` is checked.

    Signed-out visitors go to the sign-in page (htmx polls are told to go there too).
    """

    def decorate(view: ResearchView) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                login = redirect_to_login(request.get_full_path())
                if getattr(request, "htmx", False):
                    return HttpResponseClientRedirect(login.url)
                return login
            study = study_or_deny(request, slug, right)
            return view(request, study, *args, **kwargs)

        return wrapper

    return decorate


def staff_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorate a researcher view that is about no one study (the study list)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_research_staff(request.user):
            raise PermissionDenied("Researcher pages need a staff account.")
        return view(request, *args, **kwargs)

    return wrapper
