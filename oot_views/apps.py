from django.apps import AppConfig


class OotViewsConfig(AppConfig):
    name = "oot_views"
    verbose_name = "OOT pages"
