FROM python:3.11-slim
# WeasyPrint needs Pango; fonts for the PDF report.
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
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
