# The image runs the installed package, exactly what the wheel contains (tests/test_packaging.py installs the same
# wheel into a fresh virtualenv and runs check, migrate and collectstatic from outside the source tree). Nothing is
# copied package by package, so a new package or template cannot be left out.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir "setuptools>=68" wheel \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
# WeasyPrint needs Pango; fonts for the PDF report. Kerberos: gssapi/krb5 (pyspnego[kerberos]) build against
# libkrb5-dev and need a C compiler; krb5-user brings kinit/klist for operators checking a keytab.
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    libkrb5-dev krb5-user gcc \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels
ENV DJANGO_SETTINGS_MODULE=config.settings \
    EXMAINT_VAR_DIR=/var/lib/exmaint \
    EXMAINT_STATIC_ROOT=/srv/exmaint/static \
    PYTHONUNBUFFERED=1
# Static files (admin, Swagger UI) are collected into the image; WhiteNoise serves them from gunicorn. DEBUG only
# for this step, so it needs no secrets.
RUN DEBUG=true django-admin collectstatic --noinput -v 0
RUN useradd --system --home /var/lib/exmaint exmaint && mkdir -p /var/lib/exmaint && chown exmaint /var/lib/exmaint
USER exmaint
WORKDIR /var/lib/exmaint
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
