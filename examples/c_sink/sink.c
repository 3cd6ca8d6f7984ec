/*
 * A custom sink in C: subscribe to a running ser-stream pipeline and print every prediction.
 *
 *   make -C examples/c_sink            # needs libzmq (Debian: libzmq3-dev)
 *   examples/c_sink/sink ENDPOINT [COUNT]
 *
 * The header (frame 1) is JSON; for a prediction, frame 2 holds the probabilities as
 * little-endian float32 in the label order below (docs/wire.md). This example reads the few
 * header fields it needs with strstr, to stay free of a JSON library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static const char *LABELS[8] = {"neutral", "happy", "sad", "angry",
                                "fearful", "disgusted", "surprised", "calm"};

/* Copies the JSON string value of "key" into out; returns 0 when absent. */
static int string_field(const char *json, const char *key, char *out, size_t size) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *start = strstr(json, pattern);
    if (!start) return 0;
    start += strlen(pattern);
    const char *end = strchr(start, '"');
    if (!end || (size_t)(end - start) >= size) return 0;
    memcpy(out, start, end - start);
    out[end - start] = '\0';
    return 1;
}

static double number_field(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *start = strstr(json, pattern);
    return start ? atof(start + strlen(pattern)) : -1.0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ENDPOINT [COUNT]\n", argv[0]);
        return 2;
    }
    long count = argc > 2 ? atol(argv[2]) : 0;
    void *context = zmq_ctx_new();
    void *sub = zmq_socket(context, ZMQ_SUB);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(sub, argv[1]) != 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 1;
    }
    long seen = 0;
    while (count == 0 || seen < count) {
        zmq_msg_t header, payload;
        zmq_msg_init(&header);
        if (zmq_msg_recv(&header, sub, 0) < 0) break;
        size_t size = zmq_msg_size(&header);
        char *json = malloc(size + 1);
        memcpy(json, zmq_msg_data(&header), size);
        json[size] = '\0';
        int more = zmq_msg_more(&header);
        zmq_msg_close(&header);

        zmq_msg_init(&payload);
        int has_payload = more && zmq_msg_recv(&payload, sub, 0) >= 0;
        char kind[32], stream[129];
        if (string_field(json, "kind", kind, sizeof kind) && strcmp(kind, "prediction") == 0 &&
            has_payload && zmq_msg_size(&payload) == 8 * sizeof(float)) {
            const float *p = (const float *)zmq_msg_data(&payload);
            int top = 0;
            for (int i = 1; i < 8; i++) if (p[i] > p[top]) top = i;
            if (!string_field(json, "stream", stream, sizeof stream)) strcpy(stream, "?");
            printf("%s %.2f-%.2f s: %s %.2f\n", stream, number_field(json, "t_start"),
                   number_field(json, "t_end"), LABELS[top], p[top]);
            fflush(stdout);
            seen++;
        }
        zmq_msg_close(&payload);
        free(json);
    }
    zmq_close(sub);
    zmq_ctx_destroy(context);
    return 0;
}
