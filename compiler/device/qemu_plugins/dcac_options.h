/*
 * The options the project's own plugins share (dcac_insn, dcac_blocks):
 *   write_nr=<n>  the guest's write system call number (64 on aarch64, the default; 1 on x86-64)
 *   arm=<id>      instrument nothing until marker <id>, then flush the translated code and start
 * Returns 0, or -1 (qemu then refuses the plugin) on an option it does not know.
 */
#ifndef DCAC_OPTIONS_H
#define DCAC_OPTIONS_H

#include <stdio.h>
#include <glib.h>

static int dcac_parse_options(const char *plugin, int argc, char **argv, int64_t *write_nr, int64_t *arm_id)
{
    for (int i = 0; i < argc; i++) {
        g_auto(GStrv) tokens = g_strsplit(argv[i], "=", 2);
        if (g_strcmp0(tokens[0], "write_nr") == 0 && tokens[1]) {
            *write_nr = g_ascii_strtoll(tokens[1], NULL, 10);
        } else if (g_strcmp0(tokens[0], "arm") == 0 && tokens[1]) {
            *arm_id = g_ascii_strtoll(tokens[1], NULL, 10);
        } else {
            fprintf(stderr, "%s: unknown option %s\n", plugin, argv[i]);
            return -1;
        }
    }
    return 0;
}

#endif
