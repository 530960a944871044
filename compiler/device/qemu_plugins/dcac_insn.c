/*
 * dcac_insn: count executed guest instructions (inline, like tests/plugin/insn.c with inline=on), and
 * print the running count at marker system calls, so a guest can delimit regions without start-up noise.
 *
 * Marker: the guest calls write(DCAC_MARKER_FD, buf, id) (an invalid fd: the call fails with EBADF and
 * has no effect); the plugin prints "marker <id> insns <count>" at that moment. At exit: "insns: <total>".
 * Option arm=<id>: instrument nothing until marker <id> (start-up runs at plain qemu speed), then flush
 * the translated code (qemu_plugin_reset) and count from there on; "insns:" then counts from that marker.
 * Instruction counts are summed over all guest threads (one unsynchronised counter: exact for a single
 * thread, approximate when several threads run at once).
 */
#include <inttypes.h>
#include <stdio.h>
#include <glib.h>

#include <qemu-plugin.h>

#include "dcac_options.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define DCAC_MARKER_FD 252076
#define AARCH64_NR_WRITE 64

static uint64_t insn_count;
static int64_t write_nr = AARCH64_NR_WRITE;
static int64_t arm_id = -1;     /* -1: instrument from the start */
static bool armed;
static qemu_plugin_id_t plugin_id;

static void register_all(qemu_plugin_id_t id);

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    /* one inline add per block: the block's instruction count is added when the block starts */
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count,
                                             qemu_plugin_tb_n_insns(tb));
}

static void vcpu_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                         uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                         uint64_t a8)
{
    if (num == write_nr && a1 == DCAC_MARKER_FD) {
        g_autofree gchar *out = g_strdup_printf("marker %" PRIu64 " insns %" PRIu64 "\n", a3, insn_count);
        qemu_plugin_outs(out);
        if (!armed && (int64_t)a3 == arm_id) {
            armed = true;
            qemu_plugin_reset(plugin_id, register_all);   /* flush code, then register_all */
        }
    }
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    g_autofree gchar *out = g_strdup_printf("insns: %" PRIu64 "\n", insn_count);
    qemu_plugin_outs(out);
}

static void register_all(qemu_plugin_id_t id)
{
    if (armed) {
        qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    }
    qemu_plugin_register_vcpu_syscall_cb(id, vcpu_syscall);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    if (dcac_parse_options("dcac_insn", argc, argv, &write_nr, &arm_id) != 0) {
        return -1;
    }
    plugin_id = id;
    armed = arm_id < 0;
    register_all(id);
    return 0;
}
