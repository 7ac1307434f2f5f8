# The portal image: web, worker and beat run from it (docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/base.txt
COPY . .
# Static files (admin, API docs) collected into STATIC_ROOT and served by whitenoise under gunicorn.
# The settings need a secret to load; this one exists only for the build step.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && useradd --create-home k2 && mkdir -p /app/var && chown -R k2 /app/var
USER k2
EXPOSE 8000
# Gives each container its own prometheus_client multiprocess directory (deploy/docker-entrypoint.sh).
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
CMD ["gunicorn", "-c", "python:k2portal.gunicorn_conf", "k2portal.wsgi"]
