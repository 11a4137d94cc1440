// Command static-egress is the chained CNI plugin the container runtime executes on every pod
// start. It holds no CNI logic: it hands the runtime's call (the CNI_* environment and the
// configuration on stdin) to the node agent's unix socket and returns the agent's answer (stdout
// and exit code, a CNI error object included) unchanged. The agent runs the TypeScript plugin's
// own code on it (docs/cni.md). A Node.js process costs more than 100 ms to start; this costs a
// few.
//
// When the agent cannot take the call (no socket, nobody listening, no answer in time, or an
// answer that is not one), the shim runs the TypeScript plugin itself, installed beside it as
// static-egress-nodejs, with the same environment and stdin. That plugin quarantines the pod when
// it finds no agent, so "quarantine when the agent is away" holds with the shim as without it.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	// DEFAULT_AGENT_SOCKET and DEFAULT_TIMEOUT_MS of src/cni/input.ts.
	defaultSocket  = "/run/static-egress/cni.sock"
	defaultTimeout = 5000 * time.Millisecond
	execPath       = "/v1/cni/exec"
	// The TypeScript plugin's wrapper, written beside the shim by `static-egress cni install`.
	fallbackName = "static-egress-nodejs"
	// Tells the fallback plugin why it runs (it logs it).
	fallbackEnv = "STATIC_EGRESS_CNI_SHIM_FALLBACK"
	// The agent bounds its own wait by timeoutMs and then quarantines: this covers that and the reply.
	replyMargin = 2 * time.Second
	maxReply    = 1 << 20
)

func main() {
	var stdin io.Reader = os.Stdin
	// VERSION may come with nothing on stdin; a terminal means nothing is coming at all.
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		stdin = strings.NewReader("")
	}
	os.Exit(run(os.Environ(), stdin, os.Stdout, os.Stderr, fallbackPath()))
}

// fallbackPath is the TypeScript plugin next to this executable.
func fallbackPath() string {
	self, err := os.Executable()
	if err != nil {
		return fallbackName
	}
	return filepath.Join(filepath.Dir(self), fallbackName)
}

// run hands one CNI call to the agent, or to the fallback plugin, and returns the exit code.
func run(environ []string, stdin io.Reader, stdout, stderr io.Writer, fallback string) int {
	input, err := io.ReadAll(stdin)
	if err != nil {
		return runFallback(fallback, environ, input, stdout, stderr, fmt.Errorf("reading stdin: %w", err))
	}
	socket, timeout := target(input)
	reply, err := ask(socket, timeout, cniEnv(environ), input)
	if err != nil {
		return runFallback(fallback, environ, input, stdout, stderr, err)
	}
	if _, err := io.WriteString(stdout, reply.Stdout); err != nil {
		return 1
	}
	return reply.ExitCode
}

// netConf holds the only fields the shim reads: where the agent is, how long it may take, and
// the version for the one error the shim writes itself. Everything is checked by the agent.
type netConf struct {
	CniVersion  string          `json:"cniVersion"`
	AgentSocket json.RawMessage `json:"agentSocket"`
	TimeoutMs   json.RawMessage `json:"timeoutMs"`
}

// target is the agent's socket and the reply deadline. Whatever cannot be read gets the
// default: the plugin that answers (in the agent, or the fallback) reports the bad field.
func target(input []byte) (string, time.Duration) {
	var conf netConf
	_ = json.Unmarshal(input, &conf)
	socket := defaultSocket
	var s string
	if json.Unmarshal(conf.AgentSocket, &s) == nil && strings.HasPrefix(s, "/") {
		socket = s
	}
	timeout := defaultTimeout
	var ms int64
	if json.Unmarshal(conf.TimeoutMs, &ms) == nil && ms >= 100 && ms <= 60000 {
		timeout = time.Duration(ms) * time.Millisecond
	}
	return socket, timeout + replyMargin
}

// cniEnv is the runtime's part of the environment: the CNI_* variables, nothing else.
func cniEnv(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "CNI_") {
			env[k] = v
		}
	}
	return env
}

type execRequest struct {
	Env   map[string]string `json:"env"`
	Stdin string            `json:"stdin"`
}

type execReply struct {
	ExitCode int
	Stdout   string
}

// ask sends the call over HTTP on the agent's unix socket (src/cni/protocol.ts, POST /v1/cni/exec).
func ask(socket string, timeout time.Duration, env map[string]string, input []byte) (execReply, error) {
	body, err := json.Marshal(execRequest{Env: env, Stdin: string(input)})
	if err != nil {
		return execReply{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://static-egress-agent"+execPath, bytes.NewReader(body))
	if err != nil {
		return execReply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return execReply{}, fmt.Errorf("no answer from the agent at %s within %s", socket, timeout)
		}
		return execReply{}, fmt.Errorf("cannot reach the agent at %s: %w", socket, err)
	}
	defer res.Body.Close()
	text, err := io.ReadAll(io.LimitReader(res.Body, maxReply+1))
	if err != nil {
		return execReply{}, fmt.Errorf("reading the agent's answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return execReply{}, fmt.Errorf("the agent refused %s (status %d): %.300s", execPath, res.StatusCode, text)
	}
	if len(text) > maxReply {
		return execReply{}, fmt.Errorf("the agent's answer is larger than %d bytes", maxReply)
	}
	var reply struct {
		ExitCode *int    `json:"exitCode"`
		Stdout   *string `json:"stdout"`
	}
	if err := json.Unmarshal(text, &reply); err != nil || reply.ExitCode == nil || reply.Stdout == nil || *reply.ExitCode < 0 || *reply.ExitCode > 255 {
		return execReply{}, fmt.Errorf("the agent's answer is not {exitCode, stdout}: %.300s", text)
	}
	return execReply{ExitCode: *reply.ExitCode, Stdout: *reply.Stdout}, nil
}

// runFallback runs the TypeScript plugin on the same call; its answer is the shim's.
func runFallback(fallback string, environ []string, input []byte, stdout, stderr io.Writer, why error) int {
	cmd := exec.Command(fallback)
	cmd.Env = append(append([]string{}, environ...), fallbackEnv+"="+why.Error())
	cmd.Stdin = bytes.NewReader(input)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	err := cmd.Run()
	var exited *exec.ExitError
	if err == nil {
		return 0
	}
	if errors.As(err, &exited) && exited.ExitCode() >= 0 {
		return exited.ExitCode()
	}
	// Neither the agent nor the plugin: the pod can be neither programmed nor quarantined, so
	// the runtime must try again (code 11), as the plugin answers when its quarantine fails.
	return writeError(stdout, input, 11, "static-egress: neither the node agent nor the fallback plugin could take this call",
		fmt.Sprintf("agent: %v; fallback %s: %v", why, fallback, err))
}

// writeError prints the spec's error object, in the configuration's version when it is one we speak.
func writeError(stdout io.Writer, input []byte, code int, msg, details string) int {
	var conf netConf
	_ = json.Unmarshal(input, &conf)
	version := conf.CniVersion
	if version != "0.4.0" && version != "1.0.0" {
		version = "1.0.0"
	}
	text, _ := json.Marshal(map[string]any{"cniVersion": version, "code": code, "msg": msg, "details": details})
	_, _ = stdout.Write(append(text, '\n'))
	return 1
}
