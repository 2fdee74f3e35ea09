"""The peer of ``serve_vs_peer.py``: LitServe serving zsclip's own encoder and classifier (a plain LitAPI).

    python benchmarks/litserve_peer.py --port 8001 --classifier shapes.zsc --max-batch-size 32 --batch-timeout 0.01

POST /predict takes the multipart fields zsclip serve takes (``images``, ``top_k``, and ``labels``
when no --classifier is given: that label set's classifier is built on first use and cached) and
answers ``{"results": [{"predictions": [{"label", "score"}]}]}``. Needs ``pip install litserve``.
"""

from __future__ import annotations

import argparse

import litserve as ls
import torch

import zsclip
from zsclip.data.images import decode_bytes


class ZsclipAPI(ls.LitAPI):
    def __init__(self, model: str, classifier: str | None, templates: str, threads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model, self.classifier_file, self.templates, self.threads = model, classifier, templates, threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.threads)
        self.encoder = zsclip.load_model(self.model, device="cpu")
        self.transform = self.encoder.image_transform()
        self.fixed = zsclip.ZeroShotClassifier.load(self.classifier_file, self.encoder) if self.classifier_file \
            else None
        self.built: dict[str, zsclip.ZeroShotClassifier] = {}

    def decode_request(self, request) -> tuple:
        data = request["images"].file.read()
        pixels = self.transform(decode_bytes(data, self.encoder.image_size, 25_000_000))
        return pixels, request.get("labels"), int(request.get("top_k", 5))

    def predict(self, items: list[tuple] | tuple) -> list[dict] | dict:
        if self.max_batch_size == 1:  # LitServe without batching hands one item over, and takes one answer back
            return self._predict([items])[0]
        return self._predict(items)

    def _predict(self, items: list[tuple]) -> list[dict]:
        features = self.encoder.encode_images(torch.stack([pixels for pixels, _, _ in items]), "fp32")
        answers = []
        for row, (_, labels, top_k) in zip(features, items, strict=True):
            classifier = self.fixed or self._classifier(labels)
            scores, indices = classifier.top_k(row[None], top_k)
            answers.append({"predictions": [{"label": classifier.classnames[i], "score": float(s)}
                                             for s, i in zip(scores[0].tolist(), indices[0].tolist(), strict=True)]})
        return answers

    def _classifier(self, labels: str) -> zsclip.ZeroShotClassifier:
        if labels not in self.built:
            self.built[labels] = zsclip.ZeroShotClassifier.build(
                self.encoder, [name.strip() for name in labels.split(",")], self.templates, precision="fp32",
                cache=False)
        return self.built[labels]

    def encode_response(self, output: dict) -> dict:
        return {"results": [output]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--classifier", default=None, help="a classifier file; else labels come with each request")
    parser.add_argument("--templates", default="photo")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1, help="the forward pass's threads")
    args = parser.parse_args()
    api = ZsclipAPI(args.model, args.classifier, args.templates, args.threads, max_batch_size=args.max_batch_size,
                    batch_timeout=args.batch_timeout if args.max_batch_size > 1 else 0.0)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, healthcheck_path="/health")
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
