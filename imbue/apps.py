from django.apps import AppConfig


class ImbueConfig(AppConfig):
    name = "imbue"
    verbose_name = "IMBUE infrastructure"
