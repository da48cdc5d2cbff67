/* A minimal child for latency benchmarks: prints CLOCK_MONOTONIC in nanoseconds.
 * With --flock N FILE it instead times N flock(LOCK_EX) calls on its own descriptor of
 * FILE (each a no-op once held, so under the hand-over's filter each costs exactly one
 * round trip to the answerer) and prints each call's duration in nanoseconds.
 * With --wait-stdin it first prints "ready", waits for end of input, then stamps and
 * exits: the stamp is the last thing it does before exiting. With --on-term it prints
 * "ready" and stamps when its SIGTERM handler runs. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stamp(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    fflush(stdout);
}

static volatile sig_atomic_t got;
static struct timespec got_at;

static void on_term(int sig) {
    (void)sig;
    clock_gettime(CLOCK_MONOTONIC, &got_at);
    got = 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--on-term") == 0) {
        /* Stamps when SIGTERM's handler runs, then exits. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_term;
        sigaction(SIGTERM, &sa, NULL);
        printf("ready\n");
        fflush(stdout);
        while (!got)
            pause();
        printf("%lld\n", (long long)got_at.tv_sec * 1000000000LL + got_at.tv_nsec);
        fflush(stdout);
        return 0;
    }
    if (argc > 3 && strcmp(argv[1], "--flock") == 0) {
        int n = atoi(argv[2]);
        int fd = open(argv[3], O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            perror("open");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            if (flock(fd, LOCK_EX) != 0) {
                perror("flock");
                return 1;
            }
            clock_gettime(CLOCK_MONOTONIC, &b);
            printf("%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
        }
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--wait-stdin") == 0) {
        char buf[256];
        printf("ready\n");
        fflush(stdout);
        while (read(0, buf, sizeof buf) > 0) {
        }
    }
    stamp();
    return 0;
}
