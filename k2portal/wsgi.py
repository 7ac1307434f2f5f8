import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "k2portal.settings")
application = get_wsgi_application()

import k2portal.celery  # noqa: E402, F401 - the portal sends tasks (admin actions): the project's Celery app is current
