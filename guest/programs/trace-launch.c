/*
 * trace-launch STATUSFILE PROGRAM [ARGS...]: run PROGRAM with the probe watching its mm from its
 * first instruction, for `harness trace`.
 * A notifier on this process's mm would not survive execve (a new mm), so the child stops at its
 * exec (PTRACE_TRACEME makes a successful execve stop it with SIGTRAP before any user instruction);
 * we subscribe its pid then, detach, and wait. PROGRAM's stdout and stderr are ours; STATUSFILE
 * gets {"pid":P,"exit_status":N} (N = 128 + signal if it was killed).
 */
#include "probe.h"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	int status, code;
	char buf[32];
	pid_t child;
	FILE *out;

	if (argc < 3)
		fail("usage: trace-launch STATUSFILE PROGRAM [ARGS...]");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL))
			die("ptrace TRACEME");
		execv(argv[2], argv + 2);
		fprintf(stderr, "exec %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	if (waitpid(child, &status, 0) != child)
		die("waitpid");
	if (WIFSTOPPED(status)) {
		if (WSTOPSIG(status) != SIGTRAP)
			fail("child stopped by an unexpected signal before exec");
		snprintf(buf, sizeof(buf), "%d", child);
		if (write_file(PROBE_WATCH, buf))
			die("write " PROBE_WATCH);
		if (ptrace(PTRACE_DETACH, child, NULL, NULL))	/* and drop the SIGTRAP */
			die("ptrace DETACH");
		if (waitpid(child, &status, 0) != child)
			die("waitpid");
	}
	code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	out = fopen(argv[1], "w");
	if (!out)
		die("open status file");
	fprintf(out, "{\"pid\":%d,\"exit_status\":%d}\n", child, code);
	fclose(out);
	return 0;
}
