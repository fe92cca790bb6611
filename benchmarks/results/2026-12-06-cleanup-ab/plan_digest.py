import hashlib
from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.core.scenario import Deployment, Distribution, Scenario, Workload
cases = [
 ("llama3.1-8b", dict(tp=2), dict(tp=1), 3000, 4),
 ("llama3-70b", dict(tp=4, pp=2, access="block"), dict(tp=8, access="block"), 5000, 3),
 ("deepseek-v3", dict(tp=8, dp_attention=True), dict(tp=4, dp_attention=True), 2000, 5),
 ("gpt-oss-120b", dict(tp=2, chunk_tokens=1024), dict(tp=4), 9000, 3),
 ("gpt-oss-120b", dict(tp=1, pp=2, access="block"), dict(tp=2, access="block"), 9000, 2),
 ("qwen3-32b", dict(tp=1, max_batch_tokens=4096), dict(tp=1), 1500, 6),
]
h = hashlib.sha256()
for model, p, d, isl, nreq in cases:
    sc = Scenario(id="x", model=load_model(model), gpu=load_gpu("h100"), prefill=Deployment(**p), decode=Deployment(**d),
                  workload=Workload(isl=Distribution.fixed(isl), requests=nreq), pool_bytes=1 << 30)
    plan = build_plan(sc)
    h.update(plan.transfers.tobytes()); h.update(plan.requests.tobytes())
    h.update(repr((plan.src_ranks, plan.dst_ranks, plan.src_rank_bytes, plan.dst_rank_bytes, plan.src_slot_bytes, plan.dst_slot_bytes)).encode())
    print(model, len(plan.transfers))
print(h.hexdigest())
