FROM python:3.11-slim
# WeasyPrint needs Pango; fonts for the PDF report. Kerberos: gssapi/krb5 (pyspnego[kerberos]) build against
# libkrb5-dev and need a C compiler; krb5-user brings kinit/klist for operators checking a keytab.
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    libkrb5-dev krb5-user gcc \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml ./
COPY config ./config
COPY changes ./changes
COPY runner ./runner
COPY reports ./reports
COPY manage.py ./
RUN pip install --no-cache-dir .
RUN useradd --system --home /app exmaint && mkdir -p /var/lib/exmaint && chown exmaint /var/lib/exmaint
USER exmaint
EXPOSE 8000
