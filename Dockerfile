# GPU SDK container for Dataflow workers: TensorFlow's GPU build, Beam's SDK boot, and vae-augment with every
# dependency baked in at the versions of constraints.txt, so a worker installs nothing from the network at boot.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/vae-augment-gpu:2.77.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/vae-augment-gpu:2.77.0
#   vae-augment generate --runner DataflowRunner --gpu nvidia-l4 ... \
#     --sdk_container_image REGION-docker.pkg.dev/PROJECT/REPO/vae-augment-gpu:2.77.0
#
# The versions below must equal the pins of constraints.txt (tests/pipeline/generate/test_generate_dataflow.py
# checks it), and PYTHON the driver's Python: Beam's boot runs the worker with this image's python3.
ARG TF_VERSION=2.21.0
ARG BEAM_VERSION=2.77.0
ARG PYTHON=3.11

FROM apache/beam_python${PYTHON}_sdk:${BEAM_VERSION} AS beam

# The wheel of exactly what setup.py packages, built from the sources only (no build/, no egg-info, no .venv).
FROM python:${PYTHON}-slim AS wheel
WORKDIR /src
COPY setup.py README.md ./
COPY vae_model vae_model
COPY pipeline pipeline
COPY configs configs
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM tensorflow/tensorflow:${TF_VERSION}-gpu
ARG PYTHON
# Beam's boot must run the Python the job was built with: fail the build, not the workers.
RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; assert v == '${PYTHON}', f'image Python {v} is not ${PYTHON}'"
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /dist /tmp/dist
# TensorFlow is the image's own (its pin is constraints.txt's); everything else at the pins of constraints.txt.
RUN python3 -m pip install --no-cache-dir -c /tmp/constraints.txt "$(ls /tmp/dist/vae_augment-*.whl)[gcp]" \
        setuptools wheel \
    && python3 -m pip check \
    && python3 -c "import apache_beam, tensorflow, vae_model, pipeline.generate.graph" \
    && rm -rf /tmp/dist
COPY --from=beam /opt/apache/beam /opt/apache/beam
# The job still stages workflow.tar.gz (--setup_file); the boot reinstalls it over the same version. Without
# build isolation that needs no setuptools download, and every dependency is already satisfied here.
ENV PIP_NO_BUILD_ISOLATION=0
ENTRYPOINT ["/opt/apache/beam/boot"]
