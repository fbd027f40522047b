"""The lab's command-line programs, apart from the library they use::

    python -m labkit.scripts.pretrain --recipe gpt-shakespeare --steps 200 --out runs/one    # one process
    torchrun --nproc_per_node 2 -m labkit.scripts.pretrain --recipe gpt-shakespeare          # DDP (or --strategy fsdp)
    torchrun --nproc_per_node 2 -m labkit.scripts.pipeline --steps 20 --out runs/pipe       # two pipeline stages

The classroom kit's commands are the zoo's: ``python -m labkit.zoo --help``.
"""
