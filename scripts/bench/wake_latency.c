/* How long a thread takes to run after a futex wake-up from another vCPU, and what
 * the wake call costs the waker. Two threads, pinned to CPUs 0 and 1 (or both to 0
 * with `same`); 2000 wake-ups, 200 µs apart (long enough for the wakee's vCPU to go
 * idle). Used for docs/BENCHMARKS.md (Neo RPC, "One cycle, phase by phase").
 *
 *   gcc -O2 -pthread scripts/bench/wake_latency.c -o /tmp/wake_latency
 *   /tmp/wake_latency        # waker on CPU 0, wakee on CPU 1
 *   /tmp/wake_latency same   # both on CPU 0
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 2000

static atomic_int flag;
static atomic_long woke_at;
static int wakee_cpu = 1;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *wakee(void *unused) {
    (void)unused;
    pin(wakee_cpu);
    for (;;) {
        while (atomic_load(&flag) == 0)
            syscall(SYS_futex, &flag, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        atomic_store(&woke_at, now_ns());
        atomic_store(&flag, 0);
    }
    return NULL;
}

static int by_value(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "same") == 0)
        wakee_cpu = 0;
    pin(0);
    pthread_t thread;
    pthread_create(&thread, NULL, wakee, NULL);
    usleep(1000);
    static long latency[ROUNDS];
    long wake_call_ns = 0;
    for (int i = 0; i < ROUNDS; i++) {
        usleep(200);
        atomic_store(&woke_at, 0);
        long t0 = now_ns();
        atomic_store(&flag, 1);
        syscall(SYS_futex, &flag, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        wake_call_ns += now_ns() - t0;
        while (atomic_load(&woke_at) == 0)
            usleep(20);
        latency[i] = atomic_load(&woke_at) - t0;
    }
    qsort(latency, ROUNDS, sizeof latency[0], by_value);
    printf("wakee on CPU %d: runs after median %.1f us (p10 %.1f, p90 %.1f); "
           "the wake call costs the waker %.1f us on average\n",
           wakee_cpu, latency[ROUNDS / 2] / 1e3, latency[ROUNDS / 10] / 1e3,
           latency[ROUNDS * 9 / 10] / 1e3, wake_call_ns / 1e3 / ROUNDS);
    return 0;
}
