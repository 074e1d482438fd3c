"""The participant's pages, under /s/ (the recruitment link is /s/<study slug>/)."""

from django.urls import path

from study import views

app_name = "study"

urlpatterns = [
    path("<slug:slug>/", views.entry, name="entry"),
    path("<slug:slug>/start/", views.start, name="start"),
    path("<slug:slug>/resume/", views.resume, name="resume"),
    path("<slug:slug>/step/<slug:key>/", views.step, name="step"),
    path("<slug:slug>/step/<slug:key>/status/", views.chat_status, name="chat_status"),
    path("<slug:slug>/withdraw/", views.withdraw, name="withdraw"),
    path("<slug:slug>/withdrawn/", views.withdrawn, name="withdrawn"),
]
