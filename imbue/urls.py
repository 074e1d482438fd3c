from django.contrib import admin
from django.urls import include, path

from imbue import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("practice/", include("simulations.pages")),
    path("practice/", include("simulations.urls")),
    path("feedback/", include("feedback.urls")),
    path("admin/", admin.site.urls),
]
