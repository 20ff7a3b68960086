/*
 * drm_buffers: GEM buffers of a DRM driver mapped into this process, then mprotect/mremap/munmap on
 * the mappings, with the driver's own object accounting (debugfs gem_names) read at each stage.
 *
 *   drm_buffers dumb|virtgpu [--card /dev/dri/card0] [--debugfs /sys/kernel/debug/dri/0] [--no-probe]
 *
 * dumb:    DRM_IOCTL_MODE_CREATE_DUMB / MAP_DUMB / DESTROY_DUMB (needs a driver with modesetting)
 * virtgpu: DRM_IOCTL_VIRTGPU_RESOURCE_CREATE / MAP / TRANSFER_TO_HOST / WAIT, GEM_CLOSE (virtio-gpu,
 *          also without modesetting)
 * Four 64x64x32bpp buffers, each given a global name (GEM_FLINK) so that gem_names lists it, each
 * mmapped and filled with its own byte. Then buffer 1 is made read-only, buffer 2 moved with mremap
 * (and grown, which a GEM mapping refuses), the upper half of buffer 3 unmapped; every mapping is
 * checked to still hold its byte, then unmapped, then every buffer destroyed.
 *
 * Prints one JSON object: {"workload":"drm_buffers","mode":..,"pid":..,"page_size":..,"probed":..,
 * "buffers":[{"handle":..,"name":..,"size":..}],"ops":[{"op":..,"buffer":..,"start":..,"end":..,
 * "ret":..,"errno":..}],"pattern_ok":0|1,"settle_ms":{"stage":N,..},"gem_names":{"stage":"<debugfs text>",..}}
 * where settle_ms is how long the refcounts took to reach what the stage expects (2 mapped, 1 unmapped)
 * before gem_names was read: -1 if they never did within 5 s.
 * When the mode's create ioctl is refused: {"workload":"drm_buffers","mode":..,"unsupported":"<errno
 * name>","errno":..}, exit status 0, so that the caller decides whether that is a skip or a failure.
 */
#define _GNU_SOURCE
#include "../programs/probe.h"

#include <drm/drm.h>
#include <drm/drm_mode.h>
#include <drm/virtgpu_drm.h>
#include <sys/ioctl.h>

#define NBUF 4
#define WIDTH 64
#define HEIGHT 64

struct buffer {
	__u32 handle, name;
	__u64 size, offset;
	char *map;
	size_t maplen; /* what is mapped now, at map */
};

static int fd;
static const char *debugfs = "/sys/kernel/debug/dri/0";
static int first_op = 1, first_stage = 1;
static char ops[8192];
static size_t ops_len;

/* Append to out[*len] (bounded by cap) the JSON string of s. */
static void json_append(char *out, size_t cap, size_t *len, const char *s)
{
	*len += snprintf(out + *len, cap - *len, "\"");
	for (; *s && *len + 8 < cap; s++) {
		if (*s == '"' || *s == '\\')
			*len += snprintf(out + *len, cap - *len, "\\%c", *s);
		else if (*s == '\n')
			*len += snprintf(out + *len, cap - *len, "\\n");
		else if ((unsigned char)*s < 0x20)
			*len += snprintf(out + *len, cap - *len, "\\u%04x", *s);
		else
			out[(*len)++] = *s;
	}
	*len += snprintf(out + *len, cap - *len, "\"");
}

/* Record an operation on a mapping for the JSON "ops" list (printed at the end). */
static void op(const char *name, int buf, void *start, size_t len, long ret)
{
	ops_len += snprintf(ops + ops_len, sizeof(ops) - ops_len,
			    "%s{\"op\":\"%s\",\"buffer\":%d,\"start\":%lu,\"end\":%lu,\"ret\":%ld,\"errno\":%d}",
			    first_op ? "" : ",", name, buf, (unsigned long)start, (unsigned long)start + len, ret,
			    ret < 0 ? errno : 0);
	first_op = 0;
}

static char stages[NBUF * 4096 * 4];
static size_t stages_len;

/* Keep gem_names as it is now under the given stage name. */
static void snapshot(const char *stage)
{
	char path[256], text[4096];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/gem_names", debugfs);
	f = fopen(path, "r");
	if (!f)
		die(path);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = 0;
	fclose(f);
	/* Printed at the end: stdout carries a single JSON line. */
	stages_len += snprintf(stages + stages_len, sizeof(stages) - stages_len, "%s\"%s\":",
			       first_stage ? "" : ",", stage);
	json_append(stages, sizeof(stages), &stages_len, text);
	first_stage = 0;
}

static int create(int dumb, struct buffer *b)
{
	if (dumb) {
		struct drm_mode_create_dumb c = { .width = WIDTH, .height = HEIGHT, .bpp = 32 };
		struct drm_mode_map_dumb m = { 0 };

		if (ioctl(fd, DRM_IOCTL_MODE_CREATE_DUMB, &c))
			return -1;
		m.handle = c.handle;
		if (ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &m))
			die("DRM_IOCTL_MODE_MAP_DUMB");
		b->handle = c.handle;
		b->size = c.size;
		b->offset = m.offset;
	} else {
		struct drm_virtgpu_resource_create c = {
			.target = 2, /* PIPE_TEXTURE_2D: the only target without virgl */
			.format = 2, /* VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM */
			.width = WIDTH, .height = HEIGHT, .depth = 1, .array_size = 1,
			.size = WIDTH * HEIGHT * 4, .stride = WIDTH * 4,
		};
		struct drm_virtgpu_map m = { 0 };

		if (ioctl(fd, DRM_IOCTL_VIRTGPU_RESOURCE_CREATE, &c))
			return -1;
		m.handle = c.bo_handle;
		if (ioctl(fd, DRM_IOCTL_VIRTGPU_MAP, &m))
			die("DRM_IOCTL_VIRTGPU_MAP");
		b->handle = c.bo_handle;
		b->size = c.size;
		b->offset = m.offset;
	}
	struct drm_gem_flink flink = { .handle = b->handle };
	if (ioctl(fd, DRM_IOCTL_GEM_FLINK, &flink))
		die("DRM_IOCTL_GEM_FLINK");
	b->name = flink.name;
	return 0;
}

static void destroy(int dumb, struct buffer *b)
{
	if (dumb) {
		struct drm_mode_destroy_dumb d = { .handle = b->handle };

		if (ioctl(fd, DRM_IOCTL_MODE_DESTROY_DUMB, &d))
			die("DRM_IOCTL_MODE_DESTROY_DUMB");
	} else {
		struct drm_gem_close c = { .handle = b->handle };

		if (ioctl(fd, DRM_IOCTL_GEM_CLOSE, &c))
			die("DRM_IOCTL_GEM_CLOSE");
	}
}

/* Buffer `name`'s refcount in gem_names, or -1 if it is not listed. */
static int refcount(__u32 name)
{
	char path[256], line[256];
	unsigned int n, handles, refs;
	unsigned long long size;
	int found = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/gem_names", debugfs);
	f = fopen(path, "r");
	if (!f)
		die(path);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%u %llu %u %u", &n, &size, &handles, &refs) == 4 && n == name)
			found = refs;
	fclose(f);
	return found;
}

static char settles[512];
static size_t settles_len;

/*
 * Wait (5 s at most) until every buffer's refcount is `want`, and note how long that took for `stage`
 * (-1: never). A command in flight to the host holds references on its buffers, which a worker drops
 * after the host completed it (virtgpu_vq.c -> virtgpu_gem.c:virtio_gpu_array_put_free_delayed): the
 * counts settle shortly after creation or a transfer, not at once.
 */
static void settle(const char *stage, struct buffer *bufs, int want)
{
	int ms = 0, done = 0;

	while (!done && ms < 5000) {
		done = 1;
		for (int i = 0; i < NBUF; i++)
			done &= refcount(bufs[i].name) == want;
		if (!done) {
			usleep(10000);
			ms += 10;
		}
	}
	settles_len += snprintf(settles + settles_len, sizeof(settles) - settles_len, "%s\"%s\":%d",
				settles_len ? "," : "", stage, done ? ms : -1);
}

/* Have the host read buffer 0 (the device's DMA from the pages user space wrote), and wait for it. */
static void transfer_to_host(struct buffer *b)
{
	struct drm_virtgpu_3d_transfer_to_host t = {
		.bo_handle = b->handle, .box = { .w = WIDTH, .h = HEIGHT, .d = 1 }, .stride = WIDTH * 4,
	};
	struct drm_virtgpu_3d_wait w = { .handle = b->handle };

	if (ioctl(fd, DRM_IOCTL_VIRTGPU_TRANSFER_TO_HOST, &t))
		die("DRM_IOCTL_VIRTGPU_TRANSFER_TO_HOST");
	if (ioctl(fd, DRM_IOCTL_VIRTGPU_WAIT, &w))
		die("DRM_IOCTL_VIRTGPU_WAIT");
}

static int holds(const char *p, size_t len, char byte)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != byte)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	const char *card = "/dev/dri/card0";
	struct buffer bufs[NBUF] = { 0 };
	int dumb, ok = 1;

	if (argc < 2 || (strcmp(argv[1], "dumb") && strcmp(argv[1], "virtgpu"))) {
		fprintf(stderr, "usage: %s dumb|virtgpu [--card PATH] [--debugfs DIR] [--no-probe]\n", argv[0]);
		return 1;
	}
	setup(argc, argv);
	dumb = !strcmp(argv[1], "dumb");
	for (int i = 2; i + 1 < argc; i++) {
		if (!strcmp(argv[i], "--card"))
			card = argv[++i];
		else if (!strcmp(argv[i], "--debugfs"))
			debugfs = argv[++i];
	}
	fd = open(card, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die(card);
	snapshot("baseline");
	for (int i = 0; i < NBUF; i++) {
		if (create(dumb, &bufs[i])) {
			if (i)
				die("create");
			printf("{\"workload\":\"drm_buffers\",\"mode\":\"%s\",\"unsupported\":\"%s\",\"errno\":%d}\n",
			       argv[1], strerrorname_np(errno), errno);
			return 0;
		}
	}
	probe_watch_self(argc, argv);
	for (int i = 0; i < NBUF; i++) {
		struct buffer *b = &bufs[i];

		b->maplen = b->size;
		b->map = mmap(NULL, b->maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, b->offset);
		if (b->map == MAP_FAILED)
			die("mmap");
		op("mmap", i, b->map, b->maplen, 0);
		memset(b->map, 0x10 + i, b->maplen);
	}
	settle("mapped", bufs, 2);
	snapshot("mapped");
	if (!dumb)
		transfer_to_host(&bufs[0]);

	/* Buffer 1 read-only: its contents must survive. */
	op("mprotect_read", 1, bufs[1].map, bufs[1].maplen, mprotect(bufs[1].map, bufs[1].maplen, PROT_READ));

	/* Buffer 2 moved to an address we reserve first, then asked to grow (VM_DONTEXPAND refuses it). */
	struct buffer *b2 = &bufs[2];
	char *to = mmap(NULL, b2->maplen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (to == MAP_FAILED)
		die("mmap reserve");
	char *moved = mremap(b2->map, b2->maplen, b2->maplen, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	op("mremap_move", 2, b2->map, b2->maplen, moved == MAP_FAILED ? -1 : 0);
	if (moved == MAP_FAILED)
		die("mremap");
	b2->map = moved;
	char *grown = mremap(b2->map, b2->maplen, 2 * b2->maplen, MREMAP_MAYMOVE);
	op("mremap_grow", 2, b2->map, 2 * b2->maplen, grown == MAP_FAILED ? -1 : 0);
	if (grown != MAP_FAILED) { /* not expected; unmap all of it at the end, check only the object's part */
		b2->map = grown;
		b2->maplen *= 2;
	}

	/* Buffer 3: unmap its upper half, which splits the VMA (the driver's vm_ops open/close). */
	struct buffer *b3 = &bufs[3];
	size_t half = b3->maplen / 2;
	op("munmap_half", 3, b3->map + half, half, munmap(b3->map + half, half));
	b3->maplen = half;
	settle("after_ops", bufs, 2);
	snapshot("after_ops");

	for (int i = 0; i < NBUF; i++) {
		struct buffer *b = &bufs[i];

		if (!holds(b->map, b->maplen < b->size ? b->maplen : b->size, 0x10 + i))
			ok = 0;
		op("munmap", i, b->map, b->maplen, munmap(b->map, b->maplen));
	}
	settle("unmapped", bufs, 1);
	snapshot("unmapped");
	for (int i = 0; i < NBUF; i++)
		destroy(dumb, &bufs[i]);
	snapshot("destroyed");
	close(fd);

	printf("{\"workload\":\"drm_buffers\",\"mode\":\"%s\",\"pid\":%d,\"page_size\":%ld,\"probed\":%d,\"buffers\":[",
	       argv[1], getpid(), page, probed);
	for (int i = 0; i < NBUF; i++)
		printf("%s{\"handle\":%u,\"name\":%u,\"size\":%llu}", i ? "," : "", bufs[i].handle, bufs[i].name,
		       (unsigned long long)bufs[i].size);
	printf("],\"ops\":[%s],\"pattern_ok\":%d,\"settle_ms\":{%s},\"gem_names\":{%s}}\n", ops, ok, settles,
	       stages);
	return 0;
}
