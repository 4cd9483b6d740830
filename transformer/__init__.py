"""The REST gateway: one KServe model server in front of the four task predictors.

It decodes uploads, sends `UINT8 [1, H, W, 3]` RGB tensors to the predictors over V2 gRPC and
encodes their answers (CONTRACT.md section 1). It needs no torch: kserve, numpy and Pillow only.
"""
