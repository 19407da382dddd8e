"""The CPU optimizer service's torch side: levels and passes for x86 CPUs, job execution, capability.

jobs.run(job, model_path, workdir, emit) runs one job (in the worker's child process);
capability.capability() describes this host (kpt.v1.TargetInfo). service.py wires them to the bus.
"""
