"""The live conversation's pages, included at /practice/ (namespace "simulations")."""

from django.urls import path

from simulations import views

app_name = "simulations"

urlpatterns = [
    path("c/<int:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/<int:conversation_id>/send/", views.send_message, name="send"),
    path("c/<int:conversation_id>/retry/", views.retry_reply, name="retry"),
    path("c/<int:conversation_id>/end/", views.end_conversation, name="end"),
    path("c/<int:conversation_id>/checkin/", views.checkin, name="checkin"),
    path("c/<int:conversation_id>/suggest/", views.suggest, name="suggest"),
]
