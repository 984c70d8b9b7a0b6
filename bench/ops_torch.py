"""The ops of bench/ops.rs in PyTorch (CPU): the per-op baseline of bench/diffusion.sh."""

import torch, time
torch.set_grad_enabled(False)
for c, hw in [(64,256),(32,256),(64,64),(32,32)]:
    x = torch.randn(1,c,hw,hw); w = torch.randn(c,c,3,3)
    torch.nn.functional.conv2d(x,w,padding=1)
    n=5; t=time.perf_counter()
    for _ in range(n): torch.nn.functional.conv2d(x,w,padding=1)
    conv=(time.perf_counter()-t)/n
    gn=torch.nn.GroupNorm(min(32,c),c)
    t=time.perf_counter()
    for _ in range(n): gn(x)
    g=(time.perf_counter()-t)/n
    t=time.perf_counter()
    for _ in range(n): torch.nn.functional.silu(x)
    s=(time.perf_counter()-t)/n
    print(f"c={c} hw={hw}: conv3x3 {conv*1e3:.2f} ms, groupnorm {g*1e3:.2f} ms, silu {s*1e3:.2f} ms")
for heads, s, t, d in [(2,1024,1024,16),(2,1024,77,16),(4,256,256,16)]:
    q = torch.randn(2,heads,s,d); k = torch.randn(2,heads,t,d); v = torch.randn(2,heads,t,d)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    sdpa(q,k,v)
    n=10; t0=time.perf_counter()
    for _ in range(n): sdpa(q,k,v)
    a=(time.perf_counter()-t0)/n
    print(f"attention 2 rows x {heads} heads, queries={s} keys={t} d={d}: sdpa {a*1e3:.2f} ms")
for d_in, d_out in [(32,32),(32,256),(128,32)]:
    x = torch.randn(2,1024,d_in); lin = torch.nn.Linear(d_in,d_out); r = torch.randn(2,1024,d_out)
    lin(x)
    n=20; t0=time.perf_counter()
    for _ in range(n): r + lin(x)
    a=(time.perf_counter()-t0)/n
    print(f"linear + residual 2x1024 rows {d_in} -> {d_out}: torch {a*1e3:.3f} ms")
