package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// agent serves handler on a unix socket in a temporary directory and returns the socket's path.
func agent(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "cni.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return socket
}

// fallbackScript is a stand-in for the TypeScript plugin: it records its stdin and the shim's
// reason, prints a marker and exits with 3.
func fallbackScript(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, fallbackName)
	script := "#!/bin/sh\ncat > \"$(dirname \"$0\")/stdin\"\nprintf '%s' \"$" + fallbackEnv + "\" > \"$(dirname \"$0\")/reason\"\nprintf '%s' \"$CNI_COMMAND\" > \"$(dirname \"$0\")/command\"\necho fallback-answer\nexit 3\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func conf(socket string, extra string) string {
	return `{"cniVersion":"0.4.0","name":"n","type":"static-egress","agentSocket":"` + socket + `","timeoutMs":100` + extra + `}`
}

var environ = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "CNI_ARGS=K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", "PATH=/usr/bin:/bin", "SECRET=not-for-the-agent"}

func TestHandsTheCallToTheAgentAndItsAnswerBack(t *testing.T) {
	var got execRequest
	socket := agent(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != execPath || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "wrong request", http.StatusBadRequest)
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&got)
		_, _ = io.WriteString(w, `{"exitCode":1,"stdout":"{\"cniVersion\":\"0.4.0\",\"code\":7,\"msg\":\"network configuration: timeoutMs: must be an integer\"}\n"}`)
	})
	input := conf(socket, `,"prevResult":{"ips":[{"address":"10.0.0.2/24"}]}`)
	var out, errOut bytes.Buffer
	code := run(environ, strings.NewReader(input), &out, &errOut, "/nonexistent/fallback")
	if code != 1 {
		t.Fatalf("exit code %d, want the agent's 1", code)
	}
	if out.String() != "{\"cniVersion\":\"0.4.0\",\"code\":7,\"msg\":\"network configuration: timeoutMs: must be an integer\"}\n" {
		t.Fatalf("stdout %q is not the agent's", out.String())
	}
	if got.Stdin != input {
		t.Fatalf("the agent got stdin %q, want %q", got.Stdin, input)
	}
	want := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_ARGS": "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"}
	if len(got.Env) != len(want) {
		t.Fatalf("the agent got env %v, want only the CNI_* variables %v", got.Env, want)
	}
	for k, v := range want {
		if got.Env[k] != v {
			t.Fatalf("env %s = %q, want %q", k, got.Env[k], v)
		}
	}
}

func TestFallsBackToTheTypeScriptPluginWhenTheAgentCannotAnswer(t *testing.T) {
	cases := map[string]func(t *testing.T) string{
		"no socket": func(t *testing.T) string { return filepath.Join(t.TempDir(), "absent.sock") },
		"nobody listening": func(t *testing.T) string {
			socket := filepath.Join(t.TempDir(), "dead.sock")
			l, err := net.Listen("unix", socket)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			_ = l.Close()
			return socket
		},
		"an agent without the exec endpoint (older)": func(t *testing.T) string {
			return agent(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
		},
		"an answer that is not one": func(t *testing.T) string {
			return agent(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"stdout":"x"}`) })
		},
		"an exit code out of range": func(t *testing.T) string {
			return agent(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"exitCode":300,"stdout":""}`) })
		},
		"no answer in time": func(t *testing.T) string {
			return agent(t, func(w http.ResponseWriter, r *http.Request) { time.Sleep(replyMargin + 2*time.Second) })
		},
	}
	for name, socket := range cases {
		t.Run(name, func(t *testing.T) {
			fallback, dir := fallbackScript(t)
			input := conf(socket(t), "")
			var out bytes.Buffer
			started := time.Now()
			code := run(environ, strings.NewReader(input), &out, io.Discard, fallback)
			if code != 3 || out.String() != "fallback-answer\n" {
				t.Fatalf("got exit %d and %q, want the fallback's 3 and its answer", code, out.String())
			}
			if elapsed := time.Since(started); elapsed > replyMargin+time.Second {
				t.Fatalf("took %s: the deadline is timeoutMs + %s", elapsed, replyMargin)
			}
			stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
			reason, _ := os.ReadFile(filepath.Join(dir, "reason"))
			command, _ := os.ReadFile(filepath.Join(dir, "command"))
			if string(stdin) != input || string(command) != "ADD" || len(reason) == 0 {
				t.Fatalf("the fallback got stdin %q, CNI_COMMAND %q, reason %q", stdin, command, reason)
			}
		})
	}
}

func TestAnswersTryAgainWhenNeitherTheAgentNorTheFallbackCanRun(t *testing.T) {
	var out bytes.Buffer
	code := run(environ, strings.NewReader(conf(filepath.Join(t.TempDir(), "absent.sock"), "")), &out, io.Discard, filepath.Join(t.TempDir(), "missing"))
	var e struct {
		CniVersion string `json:"cniVersion"`
		Code       int    `json:"code"`
		Msg        string `json:"msg"`
	}
	if err := json.Unmarshal(out.Bytes(), &e); err != nil || code == 0 || e.Code != 11 || e.CniVersion != "0.4.0" || e.Msg == "" {
		t.Fatalf("got exit %d and %q, want a code 11 error object in the configuration's version", code, out.String())
	}
}

func TestTargetReadsOnlyWhereAndHowLong(t *testing.T) {
	cases := []struct {
		input   string
		socket  string
		timeout time.Duration
	}{
		{`{"agentSocket":"/run/x.sock","timeoutMs":250}`, "/run/x.sock", 250*time.Millisecond + replyMargin},
		{`{}`, defaultSocket, defaultTimeout + replyMargin},
		{`not json`, defaultSocket, defaultTimeout + replyMargin},
		{`{"agentSocket":"relative.sock","timeoutMs":5}`, defaultSocket, defaultTimeout + replyMargin},
		{`{"agentSocket":7,"timeoutMs":"1000"}`, defaultSocket, defaultTimeout + replyMargin},
	}
	for _, c := range cases {
		socket, timeout := target([]byte(c.input))
		if socket != c.socket || timeout != c.timeout {
			t.Errorf("target(%s) = %s, %s; want %s, %s", c.input, socket, timeout, c.socket, c.timeout)
		}
	}
}
