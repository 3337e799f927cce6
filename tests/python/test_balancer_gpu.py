"""eplb.Balancer with weights on a CUDA device: record_topk counts the
router's choices on torch's current stream, writes the chosen slots, and the
commits of a sync cycle rewrite the device tensors. Skipped (with the
reason) where torch sees no GPU or eplb was built without CUDA."""
import pytest
import torch

import eplb

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and eplb.built_with_cuda),
                                reason="needs a CUDA device for torch and eplb built with CUDA (nvcc)")

EXPERTS, SLOTS, LAYERS = 8, 12, 2


def expert_rows(layer, experts):
    return torch.stack([torch.full((16,), layer * 100.0 + e) for e in experts])


def test_record_topk_counts_on_the_stream_and_commits_rewrite_device_weights():
    dev = torch.device("cuda", 0)
    initial = [p % EXPERTS for p in range(SLOTS)]
    weights = [expert_rows(l, initial).to(dev) for l in range(LAYERS)]
    stream = torch.cuda.Stream(dev)
    with eplb.Balancer(weights, num_experts=EXPERTS, num_slots=SLOTS, mode="sync", window_steps=4,
                       step_interval=4) as bal, torch.cuda.stream(stream):
        assert bal.device == 0
        gen = torch.Generator(device=dev).manual_seed(0)
        for step in range(3):
            for l in range(LAYERS):
                # Expert 3 hot in every layer: it should get replicas.
                ids = torch.randint(0, EXPERTS, (256, 2), device=dev, generator=gen, dtype=torch.int32)
                ids[:128, 0] = 3
                phys = torch.empty_like(ids)
                bal.record_topk(l, ids, phys)
                p = bal.placement()
                assert torch.equal(p.phy2log[l][phys.long().cpu()], ids.long().cpu())
            bal.step()
        stream.synchronize()
        for _ in range(3):  # the counts reach the window a step or two later
            bal.step()
        stream.synchronize()
        m = bal.metrics()
        assert m["cycles_completed"] >= 1 and m["cycles_failed"] == 0
        p = bal.placement()
        assert all(int(p.logcnt[l, 3]) > 1 for l in range(LAYERS))
        for l in range(LAYERS):
            assert torch.equal(weights[l].cpu(), expert_rows(l, p.phy2log[l].tolist()))


def test_record_topk_refuses_host_ids_and_wrong_dtypes():
    dev = torch.device("cuda", 0)
    with eplb.Balancer([torch.zeros(8, 4, device=dev)], num_experts=8, num_slots=8) as bal:
        for ids, message in [(torch.zeros(4, 2, dtype=torch.int32), "must be a CUDA tensor"),
                             (torch.zeros(4, 2, device=dev), "int32 or int64"),
                             (torch.zeros(4, 2, 2, dtype=torch.int32, device=dev), "[tokens, k]")]:
            with pytest.raises(ValueError) as info:
                bal.record_topk(0, ids)
            assert message in str(info.value)
