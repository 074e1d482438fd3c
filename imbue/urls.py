from django.contrib import admin
from django.urls import include, path

from imbue import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("practice/", include("simulations.pages")),
    path("practice/", include("simulations.urls")),
    path("feedback/", include("feedback.urls")),
    path("s/", include("study.urls")),
    path("research/", include("study.dashboard")),
    path("admin/", admin.site.urls),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.page_not_found
handler500 = views.server_error
