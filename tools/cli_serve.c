/* `cairn serve` and `cairn token`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "tools/cli.h"

int cmd_serve(int argc, char **argv)
{
    const char *listen = NULL, *config = NULL;
    cli_opt opts[] = {{"listen", &listen, NULL}, {"config", &config, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("serve", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    api_serve_opts o = {.store = c.store, .listen = listen, .config = config};
    store_err e;
    if ((rc = api_serve(&o, &e))) return cli_fail(EXIT_FAIL, "serve", "%s", e.msg);
    return EXIT_OK;
}

int cmd_token(int argc, char **argv)
{
    const cli_command *cc = cli_find("token");
    if (argc < 2 || (strcmp(argv[1], "add") && strcmp(argv[1], "list") && strcmp(argv[1], "revoke")))
        return cli_usage(cc, "the subcommand is add, list or revoke");
    const char *sub = argv[1], *role = NULL, *tenant = NULL, *name = NULL, *config = NULL;
    cli_opt opts[] = {{"role", &role, NULL}, {"tenant", &tenant, NULL}, {"name", &name, NULL},
                      {"config", &config, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("token", argc - 1, argv + 1, opts, &c, NULL);
    if (rc) return rc;
    char *path = api_config_path(c.store, config);
    if (!path) return cli_fail(EXIT_FAIL, "token", "out of memory");
    store_err e;
    if (!strcmp(sub, "add")) {
        if (!role || !name) {
            free(path);
            return cli_usage(cc, "token add needs --role and --name");
        }
        char token[API_TOKEN_MAX];
        rc = api_token_add(path, role, tenant, name, token, &e);
        if (rc) {
            free(path);
            return cli_fail(rc == -EINVAL ? EXIT_USAGE : EXIT_FAIL, "token", "%s", e.msg);
        }
        if (c.json)
            cli_print_json(json_pack("{s:s, s:s, s:s, s:s?, s:s}", "name", name, "role", role, "token", token,
                                     "tenant", tenant, "config", path));
        else {
            printf("%s\n", token);
            fprintf(stderr, "token '%s' (%s%s%s) added to %s; it is shown only this once\n", name, role,
                    tenant ? ", tenant " : "", tenant ? tenant : "", path);
        }
        memset(token, 0, sizeof token);
    } else if (!strcmp(sub, "list")) {
        json_t *list;
        if ((rc = api_token_list(path, &list, &e))) {
            free(path);
            return cli_fail(EXIT_FAIL, "token", "%s", e.msg);
        }
        if (c.json) cli_print_json(json_pack("{s:o}", "tokens", list));
        else {
            printf("%-24s %-13s %-20s %s\n", "NAME", "ROLE", "TENANT", "CREATED");
            size_t i;
            json_t *t;
            json_array_foreach(list, i, t)
                printf("%-24s %-13s %-20s %s\n", json_string_value(json_object_get(t, "name")),
                       json_string_value(json_object_get(t, "role")),
                       json_string_value(json_object_get(t, "tenant")) ? json_string_value(json_object_get(t, "tenant")) : "*",
                       json_string_value(json_object_get(t, "created")) ? json_string_value(json_object_get(t, "created")) : "");
            json_decref(list);
        }
    } else {
        if (!name) {
            free(path);
            return cli_usage(cc, "token revoke needs --name");
        }
        if ((rc = api_token_revoke(path, name, &e))) {
            free(path);
            return cli_fail(EXIT_FAIL, "token", "%s", e.msg);
        }
        if (c.json) cli_print_json(json_pack("{s:s, s:b}", "name", name, "revoked", 1));
        else fprintf(stderr, "token '%s' revoked (a running server stops accepting it at once)\n", name);
    }
    free(path);
    return EXIT_OK;
}
