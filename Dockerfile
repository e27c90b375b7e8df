# The API as an AWS Lambda container image (the handler is app.main.handler).
# Built by `sam build` for template.yaml, or: docker build -t tracker-api .
# (README, "Deploying to AWS Lambda")
FROM public.ecr.aws/lambda/python:3.12

# Runtime dependencies only: psycopg2-binary bundles a libpq with scram-sha-256, as RDS requires.
COPY requirements.txt ${LAMBDA_TASK_ROOT}/
RUN pip install --no-cache-dir -r ${LAMBDA_TASK_ROOT}/requirements.txt

# The application, its configuration, and the migrations (run them with the same image).
COPY root.py alembic.ini ${LAMBDA_TASK_ROOT}/
COPY app ${LAMBDA_TASK_ROOT}/app
COPY config ${LAMBDA_TASK_ROOT}/config
COPY alembic ${LAMBDA_TASK_ROOT}/alembic

# Bytecode now: Lambda's file system is read-only, so without it every cold start compiled the
# app's modules again (180 ms on the development machine). The image never changes, so the
# files need no checking against their sources.
RUN python -m compileall -q --invalidation-mode unchecked-hash \
    ${LAMBDA_TASK_ROOT}/app ${LAMBDA_TASK_ROOT}/config ${LAMBDA_TASK_ROOT}/alembic \
    ${LAMBDA_TASK_ROOT}/root.py

ENV APP_ENV=production \
    PYTHONDONTWRITEBYTECODE=1

CMD ["app.main.handler"]
