# The Streamlit app, with the pipeline's model and reports baked in.
#
#   dvc repro                                   # first: produces models/, reports/, data/synthetic/
#   docker build -t signlang-app .
#   docker run --rm -p 8501:8501 signlang-app   # then open http://localhost:8501
#
# Mounted instead of baked (a newer model without rebuilding the image):
#   docker run --rm -p 8501:8501 -v "$PWD/models:/app/models:ro" -v "$PWD/reports:/app/reports:ro" \
#       -v "$PWD/data/synthetic:/app/data/synthetic:ro" signlang-app
#
# The webcam needs a WebRTC path from the browser to the container (docs/app.md):
# on Linux add `--network host`; elsewhere, or behind NAT, give a TURN server with
#   -e SIGNLANG_RTC_CONFIGURATION='{"iceServers": [{"urls": ["turn:turn.example.org:3478"], ...}]}'
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# opencv-python-headless needs no system libraries (no libGL); TensorFlow's CPU wheel brings its own.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code the app runs (the app imports the pipeline's library, stages.lib) and its settings.
COPY params.yaml ./
COPY .streamlit/config.toml .streamlit/config.toml
COPY stages/ stages/
COPY app/ app/

# The pipeline's outputs (.dockerignore keeps the large, unused ones out). A clean clone has
# only .gitkeep files here: the image then starts in the app's "run `dvc repro` first" state.
COPY models/ models/
COPY reports/ reports/
COPY data/ data/

# Not root: the app only reads what is baked or mounted.
RUN useradd --create-home --uid 1000 signlang
USER signlang

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"

CMD ["streamlit", "run", "app/streamlit_app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
