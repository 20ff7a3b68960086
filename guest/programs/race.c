/*
 * race CASE blind|context|unsafe|noretry [--pages=N] [--rounds=R] [--ops=K] [--seconds=S]: the race
 * workloads (race.h) against the probe's model driver (mmu_probe "mirror", read-only, in MODE) on N pages
 * (default 64; compaction mirrors the first 4096 of a sparse range of 32768).
 *
 * The device access writes our mirror id to "access" (a torn-down mirror re-faults under
 * mmu_interval_read_begin/retry; "retries" counts the faults that had to look again), the verify to
 * "verify" (a still-valid mirror whose frames differ from the process's is stale). The probe's classic
 * notifier watches the mm too, for the contract (every start has its end, nothing after release).
 * Prints "mode" and "mirror", the probe's line for our mirror at the end, with race.h's fields.
 */
#include "race.h"

static const char *mode;
static int mirror_id = -1;

/* Write our mirror id to the probe's FILE; the errno of a failed write, 0 on success. */
static int mirror_op(const char *file)
{
	char path[96], buf[16];
	int fd, err = 0;

	snprintf(path, sizeof(path), PROBE_DIR "/%s", file);
	snprintf(buf, sizeof(buf), "%d", mirror_id);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		die(path);
	if (write(fd, buf, strlen(buf)) < 0)
		err = errno;
	close(fd);
	return err;
}

/* The probe's line for our mirror; sets mirror_id. */
static void mirror_line(char *out, size_t size)
{
	char want[64], line[1024];
	FILE *f = fopen(PROBE_DIR "/mirror", "r");

	if (!f)
		die("open " PROBE_DIR "/mirror");
	snprintf(want, sizeof(want), " pid=%d start=0x%lx ", getpid(), (unsigned long)p);
	out[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (strstr(line, want)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, size, "%s", line);
			sscanf(line, "id=%d", &mirror_id);
		}
	fclose(f);
}

static void device_setup(const char **pos)
{
	char buf[160], line[1024];

	mode = pos[1];
	snprintf(buf, sizeof(buf), "%d %lu %lu ro %s", getpid(), (unsigned long)p, (unsigned long)p + mpages * page,
		 mode);
	if (write_file(PROBE_DIR "/mirror", buf))
		die("write " PROBE_DIR "/mirror");
	mirror_line(line, sizeof(line));
	if (mirror_id < 0)
		fail("our mirror is not in " PROBE_DIR "/mirror");
}

static int device_access(void)
{
	return mirror_op("access");
}

static int device_verify(int quiet)
{
	(void)quiet;	/* the probe's verify reads the frames under the notifier's sequence: safe any time */
	return mirror_op("verify");
}

static void device_json(void)
{
	char line[1024];

	mirror_line(line, sizeof(line));
	printf(",\"mode\":\"%s\",\"mirror\":\"%s\"", mode, line);
}

int main(int argc, char **argv)
{
	const char *pos[2] = { 0 };

	return race_main(argc, argv, pos, 2,
			 "usage: race CASE blind|context|unsafe|noretry [--pages=N] [--rounds=R] [--ops=K] [--seconds=S]");
}
