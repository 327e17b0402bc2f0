// PID 1 of the emulated AVX-512 machine (scripts/avx512_test.sh): report what the CPU offers,
// run the SIMD test binary on every path it has, print its exit status, power off.
#include <stdio.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

int main(void) {
    // A /proc, as programs (and the test binary's backtraces) expect one.
    mkdir("/proc", 0755);
    mount("proc", "/proc", "proc", 0, 0);
    printf("avx512_vm: avx512f=%d avx512bw=%d avx512vl=%d avx512vnni=%d\n",
           !!__builtin_cpu_supports("avx512f"), !!__builtin_cpu_supports("avx512bw"),
           !!__builtin_cpu_supports("avx512vl"), !!__builtin_cpu_supports("avx512vnni"));
    fflush(stdout);

    pid_t child = fork();
    if (child == 0) {
        char *argv[] = {"/simd_kernels", "--test-threads=1", "--nocapture", NULL};
        char *envp[] = {"RUST_BACKTRACE=1", NULL};
        execve(argv[0], argv, envp);
        perror("avx512_vm: exec /simd_kernels");
        _exit(127);
    }
    int status = 0;
    waitpid(child, &status, 0);
    // The host script reads this line; anything else (a panic, a hang) counts as failure.
    printf("avx512_vm: exit status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128);
    fflush(stdout);
    // Power-off does not wait for the serial line: drain it first, or the last lines are lost.
    tcdrain(STDOUT_FILENO);
    sleep(1);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
