# The tiny CLIP pretrained on the toy world, shipped with vlprompt (64 px images).
backbone = dict(name="toy", pretrained="toy")
