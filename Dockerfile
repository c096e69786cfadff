# The giftledger service image. Kafka and PostgreSQL come from outside (see docker-compose.yml):
# the embedded broker and database are an optional extra that the image does not install.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY ledger ./ledger
COPY services ./services
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 giftledger
USER giftledger
WORKDIR /home/giftledger

EXPOSE 8000
ENTRYPOINT ["giftledger"]
CMD ["run", "--api", "--payout-rail"]
