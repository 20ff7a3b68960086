/*
 * fuzz_exec: runs one `harness fuzz` program (harness/fuzz/program.py writes it) and checks, after every
 * operation, that each device mirror still agrees with the CPU.
 *
 * A program is text, one operation a line ("#" starts a comment); SLOT is an area 0..7, FIRST and N pages
 * of it (clipped to the area), KIND anon|shared|memfd|file|thp:
 *   map SLOT KIND NPAGES          unmap SLOT FIRST N           protect SLOT FIRST N none|r|rw
 *   remap SLOT grow|shrink N      remap SLOT move|dontunmap 0  write SLOT FIRST N      read SLOT FIRST N
 *   advise SLOT FIRST N dontneed|free|cold|pageout|mergeable|unmergeable|guard|unguard|hugepage
 *   fork SLOT FIRST N             a child (pinned to the last CPU) writes those pages and waits for reap
 *   reap    softdirty    compact    msync SLOT    migrate SLOT FIRST N    ksm_wait
 *   dev_read|dev_write|dev_migrate|dev_back|dev_excl SLOT FIRST N        test_hmm (/dev/hmm_dmirror0)
 *   mirror SLOT                   the model mirrors of the area (mmu_probe) fault it again
 *   bg SLOT FIRST N write|devread a thread on the other CPU does that in a loop until bg_stop
 *   bg_stop
 * With --kcov, the worker's kernel coverage (its distinct PCs) is printed before "done".
 *
 * The oracle, after every operation (all but the contract only while no background thread runs: its
 * writes would race the comparisons):
 *   contract   the probe's classic notifier on this mm has no start without its end (open 0), no end
 *              without a start
 *   mirror     every model mirror that is valid still maps the frames the process maps (verify: stale 0)
 *   device     every page the CPU has present reads the same through test_hmm's device as through the
 *              CPU (the device holds each page after this check, so the next operation's invalidation
 *              is tested for every present page)
 *   dev_write  what the device wrote is what the CPU reads
 * Completeness and event names are judged on the host (harness/fuzz/oracle.py) from what each
 * operation line gives: the probe's record numbers before and after it ("seq0", "seq1") and the pages
 * of its range that were present before it ("must": page offsets from "start").
 *
 * stdout: one JSON object a line: {"i":..,"op":..,..} per operation, then {"done":N} or, at the first
 * finding, {"finding":CHECK,"i":..,"detail":..} and exit status 3. Exit 2: the program was malformed.
 */
#define _GNU_SOURCE
#include "../programs/probe.h"

#include <lib/test_hmm_uapi.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define NSLOTS 8
#define MAX_PAGES 512
#define MAX_CHILDREN 4
#define MAX_MIRRORS (2 * NSLOTS * 4)
#define MAX_LINE 128

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#define MADV_PAGEOUT 21
#endif

struct slot {
	char *addr;		/* NULL: not mapped */
	size_t npages;
	int kind;		/* index of kinds[] */
	int fd;			/* memfd or file, else -1 */
	int mirror[2];		/* model mirror ids (rw blind, ro blind or twopass) over the area as first mapped */
	signed char prot[MAX_PAGES];	/* each page's PROT_*, -1 once unknown (an mprotect that failed half-way) */
};

static const char *const kinds[] = { "anon", "shared", "memfd", "file", "thp" };
enum { K_ANON, K_SHARED, K_MEMFD, K_FILE, K_THP };

static struct slot slots[NSLOTS];
static int hmm = -1, mem = -1, model = 1, nmirrors;
static int two_pass;	/* the probe has the two-pass interval notifier (7.x): the ro mirrors take it */
static long long stale_seen[MAX_MIRRORS];
static unsigned char *bounce, *cpu;
static unsigned int gen;
static int op_index, ncpus, verdict_fd = -1, mergeable, kmsg = -1, use_kcov;
static const char *file_dir = "/mnt/wb";

static struct {
	pid_t pid;
	int pipe;
} children[MAX_CHILDREN];
static int nchildren;

static struct {
	pthread_t thread;
	volatile int stop, running;
	int devread;
	char *addr;
	size_t npages;
	unsigned long loops;
} bg;

static __thread sigjmp_buf *volatile fault_jump;	/* volatile: the stores around the writes must stay */

static void on_fault(int sig)
{
	if (fault_jump)
		siglongjmp(*fault_jump, 1);
	signal(sig, SIG_DFL);	/* the main thread faulted: die of it, the host reports the signal */
	raise(sig);
}

static void finding(const char *check, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void finding(const char *check, const char *fmt, ...)
{
	char detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	printf("{\"finding\":\"%s\",\"i\":%d,\"detail\":\"%s\"}\n", check, op_index, detail);
	fflush(stdout);
	if (write(verdict_fd, "3", 1) != 1)
		_exit(3);
	exit(3);
}

static void malformed(const char *line) __attribute__((noreturn));
static void malformed(const char *line)
{
	fprintf(stderr, "fuzz_exec: operation %d malformed: %s\n", op_index, line);
	exit(2);
}

static void pin(int cpu_nr)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu_nr % ncpus, &set);
	sched_setaffinity(0, sizeof(set), &set);	/* best effort: a one-CPU guest runs everything on CPU 0 */
}

static int dmirror(unsigned long request, char *addr, size_t npages, struct hmm_dmirror_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->addr = (unsigned long)addr;
	cmd->ptr = (unsigned long)bounce;
	cmd->npages = npages;
	for (;;) {
		int ret = ioctl(hmm, request, cmd);

		if (ret == 0 || errno != EINTR)
			return ret;
	}
}

/* The 8-byte stamp an operation writes at both ends of a page: generation, slot, page. */
static void stamp(char *p, int s, size_t pg)
{
	unsigned long long v = ((unsigned long long)gen << 32) | ((unsigned long long)s << 24) | pg;

	memcpy(p, &v, sizeof(v));
	memcpy(p + page - sizeof(v), &v, sizeof(v));
}

/* ---- the model mirrors of mmu_probe (guest/probe/mmu_probe.c) ---------------------------------- */

struct mirror_state {
	int valid;
	long long stale;
	long long mapped_between;	/* twopass: faults that completed between an invalidation's passes */
};

static int mirror_read(int id, struct mirror_state *st)
{
	char line[1024];
	int found = 0;
	FILE *f = fopen(PROBE_DIR "/mirror", "r");

	if (!f)
		die("open " PROBE_DIR "/mirror");
	while (fgets(line, sizeof(line), f)) {
		int lid;
		char *v = strstr(line, " valid="), *s = strstr(line, " stale="), *b = strstr(line, " mapped_between=");

		if (sscanf(line, "id=%d", &lid) == 1 && lid == id && v && s) {
			st->valid = atoi(v + 7);
			st->stale = atoll(s + 7);
			st->mapped_between = b ? atoll(b + 16) : 0;
			found = 1;
		}
		/* a line longer than the buffer: its tail starts no "id=" */
	}
	fclose(f);
	return found ? 0 : -1;
}

static void mirror_write(const char *file, int id)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "%d", id);
	write_file(file, buf);	/* EFAULT when the range is no longer mapped: that is the device's problem */
}

static void mirrors_create(int s)
{
	char buf[96];
	struct slot *sl = &slots[s];
	const char *const how[2] = { "rw blind", two_pass ? "ro twopass" : "ro blind" };

	for (int k = 0; k < 2; k++) {
		sl->mirror[k] = -1;
		if (!model || nmirrors == MAX_MIRRORS)
			continue;
		snprintf(buf, sizeof(buf), "%d %lu %lu %s", getpid(), (unsigned long)sl->addr,
			 (unsigned long)sl->addr + sl->npages * page, how[k]);
		if (write_file(PROBE_DIR "/mirror", buf))
			die("write " PROBE_DIR "/mirror");
		sl->mirror[k] = nmirrors++;	/* ids count up from 0 after the host's clear */
	}
}

static void check_mirrors(void)
{
	struct mirror_state st;

	for (int id = 0; id < nmirrors; id++) {
		if (mirror_read(id, &st))
			finding("mirror", "model mirror %d is gone from " PROBE_DIR "/mirror", id);
		/* never right: the start pass moved the sequence, so a fault overlapping it must look again */
		if (st.mapped_between)
			finding("mirror", "model mirror %d (slot %d, two-pass) was mapped by %lld fault(s) between an "
				"invalidation's start and finish", id, id / 2 % NSLOTS, st.mapped_between);
		if (!st.valid)
			continue;
		mirror_write(PROBE_DIR "/verify", id);
		mirror_read(id, &st);
		if (st.stale != stale_seen[id])
			finding("mirror", "model mirror %d (slot %d, %s) maps %lld frame(s) the process no longer maps",
				id, id / 2 % NSLOTS, id % 2 ? "ro" : "rw", st.stale - stale_seen[id]);
	}
}

/* ---- the oracle --------------------------------------------------------------------------------- */

static void read_counters(long long *open_, long long *unmatched)
{
	char line[128];
	FILE *f = fopen(PROBE_DIR "/counters", "r");

	if (!f)
		die("open " PROBE_DIR "/counters");
	*open_ = *unmatched = -1;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "open %lld", open_);
		sscanf(line, "unmatched_ends %lld", unmatched);
	}
	fclose(f);
}

/*
 * ksmd, khugepaged, kcompactd and reclaim invalidate this mm on their own time: a start of theirs may be
 * open when we look. One that stays open for CONTRACT_WAIT_MS never ends.
 */
#define CONTRACT_WAIT_MS 3000

static void check_contract(void)
{
	long long open_, unmatched;

	read_counters(&open_, &unmatched);
	for (int t = 0; open_ != 0 && t < CONTRACT_WAIT_MS / 20; t++) {
		usleep(20000);
		read_counters(&open_, &unmatched);
	}
	if (open_ != 0)
		finding("contract", "%lld invalidate_range_start(s) still without their end %d ms after the operation "
			"returned", open_, CONTRACT_WAIT_MS);
	if (unmatched != 0)
		finding("contract", "%lld invalidate_range_end(s) without a start", unmatched);
}

/*
 * One page through the device (test_hmm READ, faulting it in if it holds none) and through the CPU
 * (/proc/self/mem: no signal for a page the CPU may not read). 1: the same, 0: different, -1: not
 * comparable (the device may not read it: PROT_NONE, a hole).
 */
static int same_through_device(char *p, struct hmm_dmirror_cmd *cmd)
{
	if (dmirror(HMM_DMIRROR_READ, p, 1, cmd) || pread(mem, cpu, page, (off_t)(unsigned long)p) != page)
		return -1;
	return !memcmp(bounce, cpu, page);
}

/* Every present page: the device's copy is the CPU's. A difference seen twice is a mapping the device
 * kept (a page changing between the two reads, by KSM or reclaim on their own time, differs once). */
static void check_device(void)
{
	struct hmm_dmirror_cmd cmd;
	uint64_t map[MAX_PAGES];

	if (hmm < 0)
		return;
	for (int s = 0; s < NSLOTS; s++) {
		struct slot *sl = &slots[s];

		if (!sl->addr)
			continue;
		pagemap_read(sl->addr, sl->npages, map);
		for (size_t i = 0; i < sl->npages; i++) {
			char *p = sl->addr + i * page;
			long off = 0;

			if (!((map[i] >> 63) & 1) || same_through_device(p, &cmd) != 0 || same_through_device(p, &cmd) != 0)
				continue;
			while (bounce[off] == cpu[off])
				off++;
			finding("device", "slot %d page %zu (0x%lx): the device reads 0x%02x at byte %ld, the CPU 0x%02x (%s)",
				s, i, (unsigned long)p, bounce[off], off, cpu[off],
				cmd.faults ? "the device faulted it in" : "a mapping the device kept");
		}
	}
}

static void check_all(void)
{
	if (probed)	/* a racing thread leaves no invalidation open for long: the contract holds while it runs */
		check_contract();
	if (bg.running)
		return;
	if (model)
		check_mirrors();
	check_device();
}

/* ---- operations --------------------------------------------------------------------------------- */

/*
 * Where areas go: each slot has a window of its own, far below where mmap(NULL) puts things (thread stacks,
 * malloc's arenas), cut into 4 MiB chunks (2 MiB-aligned, room to grow in place), one per map or move. A
 * hole that an unmap leaves is then never filled by someone else's mapping, which a later operation on
 * the slot would unmap or write (a thread's stack, once).
 */
#define WINDOW_BASE 0x200000000000UL
#define WINDOW_SIZE (1UL << 30)
#define CHUNK (4UL << 20)

static unsigned long chunks_used[NSLOTS];

/* A fresh chunk of slot s, reserved PROT_NONE (the caller maps over it with MAP_FIXED, or mremaps onto it). */
static char *chunk(int s)
{
	for (unsigned long tries = 0; tries < WINDOW_SIZE / CHUNK; tries++) {
		char *want = (char *)(WINDOW_BASE + s * WINDOW_SIZE + (chunks_used[s]++ % (WINDOW_SIZE / CHUNK)) * CHUNK);
		char *got = mmap(want, CHUNK, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
				 -1, 0);

		if (got == want)
			return got;
		if (got != MAP_FAILED)	/* a kernel without MAP_FIXED_NOREPLACE: it was only a hint */
			munmap(got, CHUNK);
	}
	return NULL;
}

/* What the area does not use of its chunk goes back (free, so that the area can grow into it in place). */
static char *release_rest(char *at, size_t len)
{
	if (at && at != MAP_FAILED && len < CHUNK)
		munmap(at + len, CHUNK - len);
	return at;
}

static char *map_area(int s, int kind, size_t n, int *fd)
{
	size_t len = n * page;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
	char path[64];
	char *at = chunk(s), *p;

	*fd = -1;
	if (!at)
		return NULL;
	switch (kind) {
	case K_SHARED:
		flags = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED;
		break;
	case K_MEMFD:
	case K_FILE:
		if (kind == K_MEMFD) {
			*fd = memfd_create("fuzz", 0);
		} else {
			snprintf(path, sizeof(path), "%s/fuzz-XXXXXX", file_dir);
			*fd = mkstemp(path);
			if (*fd >= 0)
				unlink(path);
		}
		/* twice the area: a mapping that grows stays inside the file (no SIGBUS) */
		if (*fd < 0 || ftruncate(*fd, 2 * MAX_PAGES * page))
			return NULL;
		p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, *fd, 0);
		return p == MAP_FAILED ? NULL : release_rest(p, len);
	}
	p = release_rest(mmap(at, len, PROT_READ | PROT_WRITE, flags, -1, 0), len);
	if (p != MAP_FAILED && kind == K_THP)
		madvise(p, len, MADV_HUGEPAGE);	/* the chunk is 2 MiB-aligned: a fault may take a huge page */
	return p == MAP_FAILED ? NULL : p;
}

static void *bg_main(void *arg)
{
	sigjmp_buf jump;
	struct hmm_dmirror_cmd cmd;
	static unsigned char bgbounce[MAX_PAGES * 4096];

	(void)arg;
	pin(1);
	while (!bg.stop) {
		if (bg.devread) {
			memset(&cmd, 0, sizeof(cmd));
			cmd.addr = (unsigned long)bg.addr;
			cmd.ptr = (unsigned long)bgbounce;
			cmd.npages = bg.npages * page <= sizeof(bgbounce) ? bg.npages : 1;
			ioctl(hmm, HMM_DMIRROR_READ, &cmd);	/* EFAULT once the range goes: keep trying */
		} else if (!sigsetjmp(jump, 1)) {
			fault_jump = &jump;
			for (size_t i = 0; i < bg.npages && !bg.stop; i++)
				((volatile char *)bg.addr)[i * page + 8] = (char)bg.loops;
			fault_jump = NULL;
		} else {
			fault_jump = NULL;	/* the range went under us: that is the race we want */
			sched_yield();
		}
		bg.loops++;
	}
	return NULL;
}

static void bg_stop(void)
{
	if (!bg.running)
		return;
	bg.stop = 1;
	pthread_join(bg.thread, NULL);
	bg.running = 0;
}

static void reap(void)
{
	for (int c = 0; c < nchildren; c++) {
		close(children[c].pipe);
		waitpid(children[c].pid, NULL, 0);
	}
	nchildren = 0;
}

/* A child writes its pages, says so, and lives until reap: the parent goes on once the writes are done
 * (a shared mapping's pages change under the parent's checks otherwise). */
static int fork_child(struct slot *sl, int s, size_t first, size_t n)
{
	int fds[2], ready[2];
	pid_t pid;
	char c;

	if (nchildren == MAX_CHILDREN || pipe(fds))
		return -1;
	if (pipe(ready)) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		close(ready[0]);
		close(ready[1]);
		return -1;
	}
	if (pid == 0) {
		/* none of the pipes that keep the others (or the supervisor) waiting: reap's EOF must arrive */
		for (int c = 0; c < nchildren; c++)
			close(children[c].pipe);
		close(verdict_fd);
		close(fds[1]);
		close(ready[0]);
		pin(ncpus - 1);
		gen++;
		for (size_t i = first; i < first + n; i++)
			stamp(sl->addr + i * page, s, i);
		close(ready[1]);
		while (read(fds[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(fds[0]);
	close(ready[1]);
	while (read(ready[0], &c, 1) > 0)	/* EOF: the child wrote, or died */
		;
	close(ready[0]);
	children[nchildren].pid = pid;
	children[nchildren].pipe = fds[1];
	nchildren++;
	return 0;
}

/* The CPU writes (stamps) or reads n pages; -1 at the first that faults: PROT_NONE, a guard, a hole,
 * where the CPU may not go, as it should not. */
static __attribute__((noinline)) void cpu_loop(char *start, size_t n, int s, size_t first, int write)
{
	for (size_t i = 0; i < n; i++)
		if (write)
			stamp(start + i * page, s, first + i);
		else
			(void)((volatile char *)start)[i * page];
}

static int cpu_access(char *start, size_t n, int s, size_t first, int write)
{
	sigjmp_buf jump;

	if (sigsetjmp(jump, 1)) {
		fault_jump = NULL;
		return -1;
	}
	fault_jump = &jump;
	cpu_loop(start, n, s, first, write);
	fault_jump = NULL;
	return 0;
}

static int advice(const char *name)
{
	static const struct {
		const char *name;
		int advice;
	} table[] = {
		{ "dontneed", MADV_DONTNEED }, { "free", MADV_FREE }, { "cold", MADV_COLD },
		{ "pageout", MADV_PAGEOUT }, { "mergeable", MADV_MERGEABLE }, { "unmergeable", MADV_UNMERGEABLE },
		{ "guard", MADV_GUARD_INSTALL }, { "unguard", MADV_GUARD_REMOVE }, { "hugepage", MADV_HUGEPAGE },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (!strcmp(name, table[i].name))
			return table[i].advice;
	return -1;
}

static long long ksm_full_scans(void)
{
	char buf[32] = "";
	int fd = open("/sys/kernel/mm/ksm/full_scans", O_RDONLY);

	if (fd < 0)
		return -1;
	if (read(fd, buf, sizeof(buf) - 1) < 0)
		buf[0] = '\0';
	close(fd);
	return atoll(buf);
}

/* The present pages of [p, p + n pages) as page offsets, in JSON: the pages the operation must invalidate. */
static void print_must(size_t n, const uint64_t *before)
{
	int first = 1;

	printf(",\"must\":[");
	for (size_t i = 0; i < n; i++)
		if ((before[i] >> 63) & 1) {
			printf("%s%zu", first ? "" : ",", i);
			first = 0;
		}
	printf("]");
}

static int run_op(char *line)
{
	char op[16] = "", word[16] = "";
	int s = -1, n1 = 0, n2 = 0, ret = 0, err = 0, have_must = 0;
	uint64_t before[MAX_PAGES];
	struct hmm_dmirror_cmd cmd;
	char *start = NULL;
	size_t first = 0, n = 0;
	long long seq0, seq1 = -1;
	int seq1_taken = 0;
	int fields = sscanf(line, "%15s %d", op, &s);

	if (fields < 1)
		return 0;
	if (fields == 2 && (s < 0 || s >= NSLOTS))
		malformed(line);
	struct slot *sl = fields == 2 ? &slots[s] : NULL;

	if (sl && strcmp(op, "map") && strcmp(op, "remap")) {
		/* SLOT FIRST N [WORD]: FIRST and N clipped to the area as it is now */
		if (sscanf(line, "%*s %*d %d %d %15s", &n1, &n2, word) >= 2 && sl->addr) {
			first = (size_t)(n1 < 0 ? 0 : n1) % sl->npages;
			n = n2 < 1 ? 1 : (size_t)n2;
			if (first + n > sl->npages)
				n = sl->npages - first;
			start = sl->addr + first * page;
		}
	}
	gen++;
	if (kmsg >= 0) {	/* on the console: which operation a crash interrupted (the output file dies with it) */
		char note[MAX_LINE + 32];
		int len = snprintf(note, sizeof(note), "<5>fuzz_exec: op %d: %s", op_index, line);

		if (write(kmsg, note, len) != len)
			kmsg = -1;	/* glibc's dprintf() gives up on /dev/kmsg (it cannot seek): one write a record */
	}
	seq0 = probe_recorded();

	if (sl && !strcmp(op, "map")) {
		int kind = -1;

		if (sscanf(line, "%*s %*d %15s %d", word, &n1) != 2)
			malformed(line);
		for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
			if (!strcmp(word, kinds[k]))
				kind = k;
		if (kind < 0 || n1 < 1 || n1 > MAX_PAGES)
			malformed(line);
		if (sl->addr) {
			ret = -2;	/* the slot has an area (a mutation put this map here): nothing to do */
		} else if (!(sl->addr = map_area(s, kind, n1, &sl->fd))) {
			ret = -1;
			err = errno;
		} else {
			sl->npages = n1;
			sl->kind = kind;
			memset(sl->prot, PROT_READ | PROT_WRITE, sizeof(sl->prot));
			mirrors_create(s);
		}
		start = sl->addr;
		n = sl->addr ? sl->npages : 0;
	} else if (sl && !strcmp(op, "remap")) {
		if (sscanf(line, "%*s %*d %15s %d", word, &n1) != 2)
			malformed(line);
		if (!sl->addr) {
			ret = -2;
		} else {
			size_t old = sl->npages, want = old;
			char *to = NULL, *got;

			if (!strcmp(word, "grow"))
				want = old + n1 > MAX_PAGES ? MAX_PAGES : old + n1;
			else if (!strcmp(word, "shrink"))
				want = (size_t)n1 >= old ? 1 : old - n1;
			else if (strcmp(word, "move") && strcmp(word, "dontunmap"))
				malformed(line);
			pagemap_read(sl->addr, old, before);
			if (want == old) {
				/* dontunmap: the old range stays mapped, empty (only its move invalidates it) */
				int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (word[0] == 'd' ? MREMAP_DONTUNMAP : 0);

				to = chunk(s);
				got = !to ? MAP_FAILED : mremap(sl->addr, old * page, old * page, flags, to);
				/* the rest of the chunk goes back after the window: its munmap is ours, not the move's */
				seq1 = probe_recorded();
				seq1_taken = 1;
				if (got != MAP_FAILED)
					release_rest(got, old * page);
			} else {
				got = mremap(sl->addr, old * page, want * page, 0);	/* in place: its chunk has room */
			}
			ret = got == MAP_FAILED ? -1 : 0;
			err = ret ? errno : 0;
			start = sl->addr;
			if (!ret) {
				/* what must be invalidated: the old place when the area moved, else a shrink's tail */
				if (got != sl->addr) {
					n = old;
					have_must = 1;
				} else if (want < old) {
					start = sl->addr + want * page;
					n = old - want;
					memmove(before, before + want, n * sizeof(before[0]));
					have_must = 1;
				}
				for (size_t i = old; i < want; i++)	/* a grown mapping is one VMA: its protection */
					sl->prot[i] = sl->prot[old - 1];
				sl->addr = got;
				sl->npages = want;
			}
		}
	} else if (!sl && !strcmp(op, "reap")) {
		reap();
	} else if (!sl && !strcmp(op, "softdirty")) {
		ret = write_file("/proc/self/clear_refs", "4");
	} else if (!sl && !strcmp(op, "compact")) {
		ret = write_file("/proc/sys/vm/compact_memory", "1");
	} else if (!sl && !strcmp(op, "ksm_wait")) {
		long long scans = ksm_full_scans();

		/* two full scans: every mergeable page was looked at once since now (ksmd only scans, and
		 * full_scans only moves, while some mm has mergeable areas) */
		for (int t = 0; scans >= 0 && mergeable && t < 100 && ksm_full_scans() < scans + 2; t++)
			usleep(20000);
	} else if (!sl && !strcmp(op, "bg_stop")) {
		bg_stop();
	} else if (sl && !sl->addr) {
		ret = -2;	/* the area is not mapped now: nothing to do */
	} else if (sl && !strcmp(op, "msync")) {
		ret = msync(sl->addr, sl->npages * page, MS_SYNC);
	} else if (sl && !strcmp(op, "mirror")) {
		for (int k = 0; k < 2; k++)
			if (sl->mirror[k] >= 0)
				mirror_write(PROBE_DIR "/access", sl->mirror[k]);
	} else if (!n) {
		malformed(line);	/* an operation on a range needs SLOT FIRST N */
	} else if (!strcmp(op, "unmap")) {
		pagemap_read(start, n, before);
		ret = munmap(start, n * page);
		have_must = !ret;
		if (!ret && first == 0 && n == sl->npages)
			sl->addr = NULL;	/* the area is gone (a hole inside it stays part of it) */
	} else if (!strcmp(op, "protect")) {
		int prot = !strcmp(word, "none") ? PROT_NONE : !strcmp(word, "r") ? PROT_READ :
			   !strcmp(word, "rw") ? PROT_READ | PROT_WRITE : -1;

		if (prot < 0)
			malformed(line);
		pagemap_read(start, n, before);
		ret = mprotect(start, n * page, prot);
		/* only a page whose protection changes must be invalidated (mprotect_fixup returns early when
		 * a VMA's flags stay): drop the others, and the ones whose protection is unknown, from "must" */
		for (size_t i = 0; i < n; i++) {
			if (sl->prot[first + i] == prot || sl->prot[first + i] < 0)
				before[i] = 0;
			sl->prot[first + i] = ret ? -1 : prot;	/* ENOMEM may come after earlier VMAs changed */
		}
		have_must = !ret;
	} else if (!strcmp(op, "advise")) {
		int adv = advice(word);

		if (adv < 0)
			malformed(line);
		pagemap_read(start, n, before);
		ret = madvise(start, n * page, adv);
		mergeable |= !ret && adv == MADV_MERGEABLE;
		have_must = !ret && (adv == MADV_DONTNEED || adv == MADV_FREE);
	} else if (!strcmp(op, "write") || !strcmp(op, "read")) {
		ret = cpu_access(start, n, s, first, op[0] == 'w');
		err = ret ? EFAULT : 0;
	} else if (!strcmp(op, "fork")) {
		ret = fork_child(sl, s, first, n);
	} else if (!strcmp(op, "migrate")) {
		void *pages[MAX_PAGES];
		int nodes[MAX_PAGES], status[MAX_PAGES];
		int node = access("/sys/devices/system/node/node1", F_OK) ? 0 : gen & 1;

		for (size_t i = 0; i < n; i++) {
			pages[i] = start + i * page;
			nodes[i] = node;
		}
		ret = syscall(SYS_move_pages, 0, n, pages, nodes, status, 0);
	} else if (!strncmp(op, "dev_", 4)) {
		if (hmm < 0) {
			ret = -2;
		} else if (!strcmp(op, "dev_read")) {
			ret = dmirror(HMM_DMIRROR_READ, start, n, &cmd);
		} else if (!strcmp(op, "dev_write")) {
			for (size_t i = 0; i < n; i++)
				stamp((char *)bounce + i * page, s, first + i);
			ret = dmirror(HMM_DMIRROR_WRITE, start, n, &cmd);
			/* what the device wrote, the CPU reads */
			for (size_t i = 0; !ret && i < n; i++)
				if (pread(mem, cpu, page, (off_t)(unsigned long)(start + i * page)) == page &&
				    memcmp(cpu, bounce + i * page, 8))
					finding("dev_write", "slot %d page %zu: the device wrote generation %u, the CPU "
						"reads another", s, first + i, gen);
		} else if (!strcmp(op, "dev_migrate")) {
			ret = dmirror(HMM_DMIRROR_MIGRATE_TO_DEV, start, n, &cmd);
		} else if (!strcmp(op, "dev_back")) {
			ret = dmirror(HMM_DMIRROR_MIGRATE_TO_SYS, start, n, &cmd);
		} else if (!strcmp(op, "dev_excl")) {
			ret = dmirror(HMM_DMIRROR_EXCLUSIVE, start, n, &cmd);
		} else {
			malformed(line);
		}
		err = ret ? errno : 0;
	} else if (!strcmp(op, "bg")) {
		bg_stop();
		bg.stop = 0;
		bg.addr = start;
		bg.npages = n;
		bg.devread = !strcmp(word, "devread");
		if (bg.devread && hmm < 0) {
			ret = -2;
		} else if (strcmp(word, "write") && !bg.devread) {
			malformed(line);
		} else if (pthread_create(&bg.thread, NULL, bg_main, NULL) == 0) {
			bg.running = 1;
		}
	} else {
		malformed(line);
	}
	if (ret == -1 && !err)
		err = errno;
	if (!seq1_taken)
		seq1 = probe_recorded();

	printf("{\"i\":%d,\"op\":\"%s\",\"slot\":%d,\"start\":%lu,\"end\":%lu,\"ret\":%d,\"errno\":%d,"
	       "\"seq0\":%lld,\"seq1\":%lld", op_index, op, s, (unsigned long)start, (unsigned long)(start + n * page),
	       ret, err, seq0, seq1);
	if (!strcmp(op, "protect") || !strcmp(op, "advise"))
		printf(",\"arg\":\"%s\"", word);
	if (!strcmp(op, "remap"))
		printf(",\"how\":\"%s\",\"addr\":%lu,\"npages\":%zu", word, (unsigned long)sl->addr, sl->npages);
	if (have_must)
		print_must(n, before);
	printf("}\n");
	fflush(stdout);
	check_all();
	return 1;
}

/* ---- --kcov: the kernel code the worker's own system calls ran (CONFIG_KCOV) ---------------------- */

#define KCOV_INIT_TRACE _IOR('c', 1, unsigned long)
#define KCOV_ENABLE _IO('c', 100)
#define KCOV_DISABLE _IO('c', 101)
#define KCOV_TRACE_PC 0
#define KCOV_WORDS (1UL << 18)

static int kcov_fd = -1;
static unsigned long *kcov_area;

static void kcov_start(void)
{
	kcov_fd = open("/sys/kernel/debug/kcov", O_RDWR);
	if (kcov_fd < 0 || ioctl(kcov_fd, KCOV_INIT_TRACE, KCOV_WORDS))
		die("kcov: open /sys/kernel/debug/kcov (the kernel needs CONFIG_KCOV)");
	kcov_area = mmap(NULL, KCOV_WORDS * sizeof(unsigned long), PROT_READ | PROT_WRITE, MAP_SHARED, kcov_fd, 0);
	if (kcov_area == MAP_FAILED || ioctl(kcov_fd, KCOV_ENABLE, KCOV_TRACE_PC))
		die("kcov: mmap or enable");
	__atomic_store_n(&kcov_area[0], 0, __ATOMIC_RELAXED);
}

static int by_value(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;

	return x < y ? -1 : x > y;
}

/* The distinct PCs, one line: {"pcs":"hex,hex,..."} (the trace wraps at KCOV_WORDS: then only the first). */
static void kcov_report(void)
{
	unsigned long n = __atomic_load_n(&kcov_area[0], __ATOMIC_RELAXED);

	ioctl(kcov_fd, KCOV_DISABLE, 0);
	if (n > KCOV_WORDS - 1)
		n = KCOV_WORDS - 1;
	qsort(kcov_area + 1, n, sizeof(unsigned long), by_value);
	printf("{\"pcs\":\"");
	for (unsigned long i = 1, last = 0; i <= n; i++)
		if (kcov_area[i] != last) {
			printf("%s%lx", last ? "," : "", kcov_area[i]);
			last = kcov_area[i];
		}
	printf("\"}\n");
}

/* The program, in the worker: returns its exit status once the verdict is out. */
static int work(int argc, char **argv, FILE *in)
{
	char line[MAX_LINE];

	pin(0);
	signal(SIGSEGV, on_fault);
	signal(SIGBUS, on_fault);
	bounce = malloc(MAX_PAGES * page);
	cpu = malloc(page);
	mem = open("/proc/self/mem", O_RDONLY);
	if (!bounce || !cpu || mem < 0)
		die("setup");
	hmm = hmm == -2 ? -1 : open("/dev/hmm_dmirror0", O_RDWR | O_CLOEXEC);
	kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (model && access(PROBE_DIR "/mirror", F_OK))
		model = 0;	/* no probe module: the device's check and the host's alone */
	two_pass = model && read_flag("/sys/module/mmu_probe/parameters/two_pass");
	if (access(PROBE_WATCH, F_OK))
		no_probe = 1;	/* no probe module: no contract, and no events for the host to judge */
	probe_watch_self(argc, argv);
	if (use_kcov)
		kcov_start();
	printf("{\"pid\":%d,\"page_size\":%ld,\"probed\":%d,\"hmm\":%d,\"model\":%d,\"two_pass\":%d,\"cpus\":%d}\n",
	       getpid(), page, probed, hmm >= 0, model, two_pass, ncpus);
	fflush(stdout);
	while (fgets(line, sizeof(line), in)) {
		char *hash = strchr(line, '#');

		if (hash)
			*hash = '\0';
		if (run_op(line))
			op_index++;
	}
	bg_stop();
	reap();
	check_all();
	if (use_kcov)
		kcov_report();
	printf("{\"done\":%d}\n", op_index);
	fflush(stdout);
	if (write(verdict_fd, "0", 1) != 1)
		return 1;
	return 0;
}

#define EXIT_WAIT_MS 3000

/*
 * The parent waits for the worker's verdict, then a while for its exit: a kernel that broke the contract
 * may leave the worker asleep for good in its exit (test_hmm's release waits for an invalidation that never
 * ends), and the verdict must still reach the host now rather than at its timeout.
 */
static int supervise(pid_t worker, int verdict)
{
	char code = 0;
	int status;

	if (read(verdict, &code, 1) != 1)
		code = 0;	/* the worker ended without a verdict: its exit status says how */
	for (int t = 0; code && t < EXIT_WAIT_MS / 20; t++) {
		if (waitpid(worker, &status, WNOHANG) == worker)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(20000);
	}
	if (code) {
		printf("{\"stuck\":\"the worker did not exit within %d ms of its verdict\"}\n", EXIT_WAIT_MS);
		return code - '0';
	}
	if (waitpid(worker, &status, 0) != worker)
		die("waitpid");
	if (WIFSIGNALED(status))
		printf("{\"died\":\"killed by signal %d\"}\n", WTERMSIG(status));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
	int verdict[2];
	pid_t worker;
	FILE *in;

	setup(argc, argv);
	ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-hmm"))
			hmm = -2;
		else if (!strcmp(argv[i], "--no-model"))
			model = 0;
		else if (!strcmp(argv[i], "--kcov"))
			use_kcov = 1;
		else if (!strncmp(argv[i], "--file-dir=", 11))
			file_dir = argv[i] + 11;
	}
#ifdef FUZZ_EMBEDDED_PROGRAM	/* a reproducer (harness/fuzz/report.py): the program is built in */
	static const char embedded[] = FUZZ_EMBEDDED_PROGRAM;

	in = fmemopen((void *)embedded, sizeof(embedded) - 1, "r");
#else
	in = argc > 1 && strncmp(argv[argc - 1], "--", 2) ? fopen(argv[argc - 1], "r") : stdin;
#endif
	if (!in)
		die("open the program");
	if (pipe(verdict))
		die("pipe");
	fflush(stdout);
	worker = fork();
	if (worker < 0)
		die("fork");
	if (worker == 0) {
		close(verdict[0]);
		verdict_fd = verdict[1];
		return work(argc, argv, in);
	}
	close(verdict[1]);
	return supervise(worker, verdict[0]);
}
