/*
 * ev_mirror CASE ro|rw blind|context [--pages=N] [--iters=K] [--dir=D]: the evidence workloads
 * (ev_cases.h) against the probe's model driver, which mirrors the first min(N, 4096) pages of this
 * process (docs/evidence.md). The device access writes "access" (a torn-down mirror re-faults), the
 * verify writes "verify" (counts mirrored pages left at a stale frame).
 * Prints "mirror" (the probe's line for this mirror before exit) and ev_json_common's fields.
 */
#include "ev_cases.h"

static int mirror_id;

static void mirror_op(const char *file)
{
	char path[96], buf[16];

	snprintf(path, sizeof(path), PROBE_DIR "/%s", file);
	snprintf(buf, sizeof(buf), "%d", mirror_id);
	if (write_file(path, buf))
		die(path);
}

static void mirror_access(struct ev *ev)
{
	(void)ev;
	mirror_op("access");
}

static void mirror_verify(struct ev *ev)
{
	(void)ev;
	mirror_op("verify");
}

/* The probe's line for our mirror ("" if none); the id is the one matching our pid and start. */
static void mirror_line(void *start, char *out, size_t size)
{
	char want[64], line[1024];
	FILE *f = fopen(PROBE_DIR "/mirror", "r");

	if (!f)
		die("open " PROBE_DIR "/mirror");
	snprintf(want, sizeof(want), " pid=%d start=0x%lx ", getpid(), (unsigned long)start);
	out[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (strstr(line, want)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, size, "%s", line);
			sscanf(line, "id=%d", &mirror_id);
		}
	fclose(f);
}

int main(int argc, char **argv)
{
	struct ev ev;
	char buf[160], line[1024];

	setup(argc, argv);
	ev_args(&ev, argc, argv, 3, "usage: ev_mirror CASE ro|rw blind|context [--pages=N] [--iters=K] [--dir=D]");
	const char *perm = ev.pos[1], *mode = ev.pos[2];
	ev_map(&ev);

	snprintf(buf, sizeof(buf), "%d %lu %lu %s %s", getpid(), (unsigned long)ev.p, (unsigned long)ev.p + ev.mlen,
		 perm, mode);
	if (write_file(PROBE_DIR "/mirror", buf))
		die("write " PROBE_DIR "/mirror");
	mirror_line(ev.p, line, sizeof(line));
	mirror_op("access");	/* the first fault, outside the timed loop */

	ev_loop(&ev, mirror_access, mirror_verify);

	mirror_line(ev.p, line, sizeof(line));
	json_begin("ev_mirror", ev.kase);
	printf(",\"perm\":\"%s\",\"mode\":\"%s\",\"mirror\":\"%s\"", perm, mode, line);
	ev_json_common(&ev);
	json_end();
	if (ev.fd >= 0)
		close(ev.fd);
	return 0;
}
