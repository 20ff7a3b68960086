// SPDX-License-Identifier: GPL-2.0
/* Panics as it loads: the harness's test that a crash during boot ends the run with its console log. */
#include <linux/kernel.h>
#include <linux/module.h>

static int __init fault_panic_init(void)
{
	panic("fault_panic: panicking on purpose at module load");
	return 0;
}

module_init(fault_panic_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Test-only: panics at load");
