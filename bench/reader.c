/* The hot-read loop of the benchmark: open + read + close of files in a tight loop, on one or
 * more threads. Usage: reader DIR NFILES READS_PER_THREAD THREADS
 * Prints: reads seconds */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char **paths;
static int nfiles;
static long reads;

static void *worker(void *arg) {
    long offset = (long)arg;
    char buf[4096];
    for (long i = 0; i < reads; i++) {
        int fd = open(paths[(i + offset) % nfiles], O_RDONLY);
        if (fd < 0 || read(fd, buf, sizeof buf) <= 0) {
            perror(paths[(i + offset) % nfiles]);
            exit(1);
        }
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: reader DIR NFILES READS_PER_THREAD THREADS\n");
        return 2;
    }
    nfiles = atoi(argv[2]);
    reads = atol(argv[3]);
    int threads = atoi(argv[4]);
    paths = calloc(nfiles, sizeof *paths);
    for (int i = 0; i < nfiles; i++) {
        paths[i] = malloc(4200);
        snprintf(paths[i], 4200, "%s/f%04d", argv[1], i);
    }
    pthread_t tids[256];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long t = 0; t < threads; t++)
        pthread_create(&tids[t], NULL, worker, (void *)(t * 997));
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%ld %.6f\n", reads * threads, secs);
    return 0;
}
