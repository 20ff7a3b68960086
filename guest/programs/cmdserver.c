/*
 * cmdserver: the harness's command server, started over a long-lived SSH exec channel (one per thread
 * that runs commands at once; harness/vm/cmdserver.py is the other end). It runs argument lists
 * without a shell: each command costs a vfork and an execve in the guest, not a new SSH channel,
 * dropbear's fork and `sh -c`.
 *
 * Frames, both ways: type (1 byte), payload length (u32, big-endian), payload.
 *   host -> guest  'R' run: timeout_ms (u32, 0: none), argc (u32), argc x (length u32, bytes),
 *                      then the command's stdin: the rest of the payload
 *   guest -> host  'H' hello (once, at start): "cmdserver 1"
 *                  'O' / 'E' a piece of the command's stdout / stderr, as it comes
 *                  'X' the end: how (u8: 0 exited, 1 killed by a signal, 2 killed at its timeout),
 *                      code (i32: exit status or signal), guest time from fork to reap (u64, us)
 *                  'F' the command could not be started (pipe, fork, memory): a message
 * One command at a time. The command runs in a session of its own (setsid), so that its timeout kills
 * its whole process group. A program that cannot be started gets what a shell gives: its name and the
 * error on stderr, exit status 127 (not found) or 126. Like dropbear's exec channel, the reply comes when the command itself has
 * exited, with what its pipes hold then: a background child that keeps them open does not hold the
 * reply, and what it writes afterwards is lost. The host closing the channel (EOF on our stdin) kills
 * a running command and ends the server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HELLO "cmdserver 1"
#define MAX_REQUEST (256u << 20)	/* the host sends no more (harness/vm/cmdserver.py MAX_REQUEST) */
#define CHUNK 65536
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define DRAIN_READS 1024	/* after the exit: at most this many reads per pipe (a writer that never stops) */

static int sigchld_pipe[2];	/* SIGCHLD handler -> poll loop */

static void on_sigchld(int sig)
{
	int saved = errno;

	(void)sig;
	if (write(sigchld_pipe[1], "c", 1) < 0) {
		/* full: a wake-up is already pending */
	}
	errno = saved;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* 0 when all n bytes were read; -1 at EOF or on an error */
static int read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n) {
		ssize_t got = read(fd, p, n);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return -1;
		p += got;
		n -= got;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t put = write(fd, p, n);

		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0 && errno == EAGAIN) {
			struct pollfd w = { .fd = fd, .events = POLLOUT };

			poll(&w, 1, -1);
			continue;
		}
		if (put <= 0)
			return -1;
		p += put;
		n -= put;
	}
	return 0;
}

static pid_t running = -1;	/* the command's pid (and process group) while it runs */

/* The host is gone (or spoke nonsense): take the running command with us. */
static void quit(int status)
{
	if (running > 0) {
		kill(-running, SIGKILL);
		kill(running, SIGKILL);
	}
	_exit(status);
}

/* Frames wait here and leave in one write when we are about to wait (flush): each write is a packet
 * of dropbear's, so a header and its payload, or the last output and the exit, go together. */
static unsigned char outbuf[2 * CHUNK];
static size_t outlen;

static void flush(void)
{
	if (outlen && write_full(1, outbuf, outlen))
		quit(0);
	outlen = 0;
}

static void send_frame(char type, const void *data, uint32_t len)
{
	if (outlen + 5 + len > sizeof(outbuf))
		flush();
	if (5 + len > sizeof(outbuf)) {
		unsigned char head[5] = { type };

		put_u32(head + 1, len);
		if (write_full(1, head, sizeof(head)) || write_full(1, data, len))
			quit(0);
		return;
	}
	outbuf[outlen] = type;
	put_u32(outbuf + outlen + 1, len);
	memcpy(outbuf + outlen + 5, data, len);
	outlen += 5 + len;
}

static void send_failure(const char *what)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
	send_frame('F', msg, strlen(msg));
	flush();
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct request {
	uint32_t timeout_ms;
	char **argv;
	const unsigned char *in;	/* stdin */
	size_t in_len;
};

/* Parse an 'R' payload; 0 if it is well formed. argv points into `buf` (arguments NUL-terminated there). */
static int parse_request(unsigned char *buf, uint32_t len, struct request *req)
{
	uint32_t argc, i, pos = 8;

	if (len < 8)
		return -1;
	req->timeout_ms = get_u32(buf);
	argc = get_u32(buf + 4);
	if (argc == 0 || argc > len / 4)
		return -1;
	req->argv = calloc(argc + 1, sizeof(char *));
	if (!req->argv)
		return -1;
	for (i = 0; i < argc; i++) {
		uint32_t n;

		if (len - pos < 4)
			return -1;
		n = get_u32(buf + pos);
		if (n > len - pos - 4 || memchr(buf + pos + 4, 0, n))
			return -1;
		/* shift the bytes over their length field to make room for the NUL */
		memmove(buf + pos, buf + pos + 4, n);
		buf[pos + n] = 0;
		req->argv[i] = (char *)buf + pos;
		pos += 4 + n;
	}
	req->in = buf + pos;
	req->in_len = len - pos;
	return 0;
}

/* The command, started with posix_spawn (a vfork: no copy of our page tables, no copy-on-write faults,
 * which under TCG cost more than the exec) in a session of its own, on our pipes, with the signal
 * dispositions and mask a shell would give it. 0, or the errno of a failed start. */
static int spawn(const struct request *req, int in, int out, int err)
{
	posix_spawn_file_actions_t files;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	int rc;

	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGCHLD);
	if ((rc = posix_spawn_file_actions_init(&files)))
		return rc;
	if ((rc = posix_spawnattr_init(&attr))) {
		posix_spawn_file_actions_destroy(&files);
		return rc;
	}
	if (!(rc = posix_spawn_file_actions_adddup2(&files, in, 0)) &&
	    !(rc = posix_spawn_file_actions_adddup2(&files, out, 1)) &&
	    !(rc = posix_spawn_file_actions_adddup2(&files, err, 2)) &&
	    !(rc = posix_spawnattr_setsigmask(&attr, &none)) &&
	    !(rc = posix_spawnattr_setsigdefault(&attr, &dfl)) &&
	    !(rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
					    POSIX_SPAWN_SETSIGDEF)))
		rc = posix_spawnp(&running, req->argv[0], &files, &attr, req->argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&files);
	return rc;
}

static int nonblocking(int fd)
{
	return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Read what `fd` has now; forward it as `type`. -1 at EOF (or an error), 0 when it has no more now. */
static int forward(int fd, char type, char *buf)
{
	ssize_t got = read(fd, buf, CHUNK);

	if (got < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (got <= 0)
		return -1;
	send_frame(type, buf, got);
	return 1;
}

static void run(const struct request *req)
{
	int in[2], out[2], err[2], status = 0, timed_out = 0, rc;
	size_t fed = 0;
	uint64_t started, deadline, took;
	unsigned char end[13];
	static char buf[CHUNK];

	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
		send_failure("pipe");
		return;	/* leaks at most a pipe, on a guest out of descriptors */
	}
	started = now_us();
	deadline = req->timeout_ms ? started + (uint64_t)req->timeout_ms * 1000 : 0;
	rc = spawn(req, in[0], out[1], err[1]);
	if (rc) {
		/* what a shell says and does when it cannot run a program */
		unsigned char failed[13] = { 0 };
		char msg[512];
		int len = snprintf(msg, sizeof(msg), "cmdserver: %s: %s\n", req->argv[0], strerror(rc));

		running = -1;
		for (int i = 0; i < 2; i++) {
			close(in[i]);
			close(out[i]);
			close(err[i]);
		}
		if (rc == EAGAIN || rc == ENOMEM || rc == EMFILE || rc == ENFILE) {
			errno = rc;	/* not the program's fault: the guest's (no memory, no processes left) */
			send_failure("spawn");
			return;
		}
		send_frame('E', msg, len < (int)sizeof(msg) ? len : (int)sizeof(msg) - 1);
		put_u32(failed + 1, rc == ENOENT ? 127 : 126);
		send_frame('X', failed, sizeof(failed));
		flush();
		return;
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	nonblocking(in[1]);
	nonblocking(out[0]);
	nonblocking(err[0]);
	if (req->in_len == 0) {
		close(in[1]);
		in[1] = -1;
	}

	for (;;) {
		/* [0] SIGCHLD, [1] stdout, [2] stderr, [3] the command's stdin, [4] the host (HUP: gone) */
		struct pollfd fds[5] = {
			{ .fd = sigchld_pipe[0], .events = POLLIN },
			{ .fd = out[0], .events = POLLIN },
			{ .fd = err[0], .events = POLLIN },
			{ .fd = in[1], .events = POLLOUT },
			{ .fd = 0, .events = 0 },
		};
		int wait_ms = -1;
		pid_t done;

		if (deadline) {
			uint64_t now = now_us();

			/* in slices of a minute at most: a timeout of days does not overflow an int */
			wait_ms = now >= deadline ? 0 : (int)((MIN(deadline - now, 60000000) + 999) / 1000);
		}
		flush();
		if (poll(fds, 5, wait_ms) < 0 && errno != EINTR)
			quit(3);
		if (fds[4].revents & (POLLHUP | POLLERR))
			quit(0);
		if (fds[0].revents & POLLIN)
			while (read(sigchld_pipe[0], buf, sizeof(buf)) > 0)
				;
		if (fds[1].revents && forward(out[0], 'O', buf) < 0) {
			close(out[0]);
			out[0] = -1;
		}
		if (fds[2].revents && forward(err[0], 'E', buf) < 0) {
			close(err[0]);
			err[0] = -1;
		}
		if (fds[3].revents) {
			ssize_t put = write(in[1], req->in + fed, req->in_len - fed);

			if (put > 0)
				fed += put;
			/* all fed, or the command closed its stdin (EPIPE): it gets EOF, we drop the rest */
			if (fed == req->in_len || (put < 0 && errno != EAGAIN && errno != EINTR)) {
				close(in[1]);
				in[1] = -1;
			}
		}
		done = waitpid(running, &status, WNOHANG);
		if (done == running)
			break;
		if (deadline && now_us() >= deadline) {
			kill(-running, SIGKILL);
			kill(running, SIGKILL);
			waitpid(running, &status, 0);
			timed_out = 1;
			break;
		}
	}
	took = now_us() - started;
	end[0] = timed_out ? 2 : WIFSIGNALED(status) ? 1 : 0;
	put_u32(end + 1, WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	put_u32(end + 5, took >> 32);
	put_u32(end + 9, took & 0xffffffff);
	running = -1;
	/* what the command wrote before it exited is in its pipes now */
	for (int i = 0; i < DRAIN_READS && out[0] >= 0 && forward(out[0], 'O', buf) > 0; i++)
		;
	for (int i = 0; i < DRAIN_READS && err[0] >= 0 && forward(err[0], 'E', buf) > 0; i++)
		;
	for (int i = 0; i < 2; i++) {
		int fd = i ? err[0] : out[0];

		if (fd >= 0)
			close(fd);
	}
	if (in[1] >= 0)
		close(in[1]);
	send_frame('X', end, sizeof(end));
	flush();
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP };

	if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK))
		return 2;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);	/* a closed pipe is an error from write(), not our death */
	send_frame('H', HELLO, strlen(HELLO));
	flush();
	for (;;) {
		unsigned char head[5], *payload;
		uint32_t len;
		struct request req = { 0 };

		if (read_full(0, head, sizeof(head)))
			return 0;	/* the host closed the channel */
		len = get_u32(head + 1);
		if (head[0] != 'R' || len > MAX_REQUEST) {
			errno = EPROTO;
			send_failure("bad request frame");
			return 2;
		}
		payload = malloc(len + 1);
		if (!payload) {
			/* cannot even read it: the stream cannot be resynchronised */
			send_failure("malloc");
			return 2;
		}
		if (read_full(0, payload, len))
			return 0;
		if (parse_request(payload, len, &req)) {
			errno = EPROTO;
			send_failure("malformed request");
			return 2;
		}
		run(&req);
		free(req.argv);
		free(payload);
	}
}
