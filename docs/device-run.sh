#!/bin/bash
# One device session: CPU facts, native AVX-512 tests, determinism, then the benchmarks.
cd /tmp/bundle
# no OMP_PROC_BIND: with several ranks it would pin them all to the same cores
(lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Socket|L2|L3'; grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ') > $OUT/cpu.txt 2>&1
for t in test_kernels_avx512 test_kernels test_swiglu_isa; do timeout 60 bin/$t > $OUT/$t.txt 2>&1; echo "$t rc=$?" >> $OUT/tests.txt; done
for p in 1 2 4 8; do MOED_ISA=avx512 timeout 60 mpiexec.mpich -n $p bin/moed run files/tiny2.ini --set run.dir=/tmp/r$p --set train.steps=100 --set log.every=1000 2>&1 | tail -1; done > $OUT/determinism.txt
timeout 40 bin/moed-bench peak > $OUT/peak.txt 2>&1
timeout 60 bin/moed-bench layer --reps 5 > $OUT/layer1.txt 2>&1
timeout 40 bin/moed-bench layer --reps 3 --isa avx2 > $OUT/layer1_avx2.txt 2>&1
timeout 40 bin/moed-bench layer --reps 3 --threads 16 > $OUT/layer16.txt 2>&1
timeout 280 bin/moed-bench gemm --reps 3 --no-ffn > $OUT/gemm.txt 2>&1
echo "gemm rc=$?" >> $OUT/gemm.txt
