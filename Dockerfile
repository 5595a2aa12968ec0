# bitesm on a CUDA PyTorch base image (torch comes from the image; the other pins from constraints.txt).
#   docker build -t bitesm .
#   docker run --gpus all -v $PWD/runs:/workspace/bitesm/runs bitesm \
#       accelerate launch --multi_gpu --num_processes 8 train/pretrain.py \
#       --config configs/crammed-ternary-esm2-8m.yaml --output-dir runs/crammed-ternary
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

WORKDIR /workspace/bitesm
COPY . .
RUN grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt -e ".[dev]" \
    && bitesm --help > /dev/null

CMD ["bitesm", "--help"]
