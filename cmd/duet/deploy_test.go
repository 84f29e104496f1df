package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/duetkit/duet/internal/system"
)

// deployDir holds the container image, compose and Kubernetes files.
var deployDir = filepath.Join("..", "..", "deploy")

// serveEnv is the environment of one `duet serve` in a deployment file,
// and where it came from, for messages.
type serveEnv struct {
	where string
	args  []string // after the binary: "serve", COMPONENT
	env   map[string]string
}

// check reads e as `duet serve` would: every DUET_ variable must name one
// of its flags (duet ignores the others, silently), the values must parse
// and the component's own checks pass. It returns the configuration.
// Other variables (GOMEMLIMIT, OTEL_*) are not duet's flags and are left
// alone.
func (e serveEnv) check(t *testing.T) (string, system.ServeConfig) {
	t.Helper()
	if len(e.args) != 2 || e.args[0] != "serve" {
		t.Fatalf("%s: runs duet %q, want serve COMPONENT", e.where, e.args)
	}
	known := serveVariables(t)
	for name := range known {
		t.Setenv(name, "") // none of the test's own
	}
	for name, value := range e.env {
		if !strings.HasPrefix(name, "DUET_") {
			continue // the Go runtime's, OpenTelemetry's: not duet's flags
		}
		if !known[name] {
			t.Errorf("%s: %s is no variable of duet serve's (duet would ignore it)", e.where, name)
			continue
		}
		t.Setenv(name, value)
	}
	component, cfg, _, err := serveConfig(e.args[1:], &bytes.Buffer{})
	if err != nil {
		t.Fatalf("%s: duet serve refuses it: %v", e.where, err)
	}
	return component, cfg
}

// serveVariables are the DUET_* variables `duet serve --help` lists.
func serveVariables(t *testing.T) map[string]bool {
	t.Helper()
	var help bytes.Buffer
	_ = run(context.Background(), []string{"serve", "--help"}, &help, &help)
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[(DUET_[A-Z_]+)\]`).FindAllStringSubmatch(help.String(), -1) {
		names[m[1]] = true
	}
	if len(names) < 20 {
		t.Fatalf("duet serve --help lists %d variables:\n%s", len(names), help.String())
	}
	return names
}

// targets are a configuration's peers by flag.
func targets(cfg system.ServeConfig) map[string]string {
	all := map[string]string{"user-target": cfg.UserTarget, "order-target": cfg.OrderTarget, "payment-target": cfg.PaymentTarget,
		"inventory-target": cfg.InventoryTarget, "notification-target": cfg.NotificationTarget}
	for flag, target := range all {
		if target == "" {
			delete(all, flag)
		}
	}
	return all
}

// dnsTarget splits "dns:///host:port", the form a deployment's peers take
// so that kit/client balances over every address the name has.
func dnsTarget(t *testing.T, where, flag, target string) (host string, port int) {
	t.Helper()
	rest, ok := strings.CutPrefix(target, "dns:///")
	h, p, err := net.SplitHostPort(rest)
	n, perr := strconv.Atoi(p)
	if !ok || err != nil || perr != nil {
		t.Fatalf("%s: --%s %q, want dns:///HOST:PORT", where, flag, target)
	}
	return h, n
}

// port is an address's port ("":9090" → 9090).
func port(t *testing.T, where, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("%s: address %q has no port", where, addr)
	}
	return n
}

// TestDeployCompose: deploy/compose.yaml loads with compose-go, runs every
// component once on the image deploy/Dockerfile builds, each with an
// environment `duet serve` accepts, PostgreSQL for every service, NATS
// for those with events, and peers that are services of the file on their
// listen ports.
func TestDeployCompose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(deployDir, "compose.yaml")}, cli.WithWorkingDirectory(deployDir), cli.WithName("duet"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	listens := map[string]int{} // compose service → its duet listen port
	configs := map[string]system.ServeConfig{}
	var builders []string
	for name, svc := range project.Services {
		if svc.Build != nil {
			builders = append(builders, name)
			if svc.Image != "duet:dev" || svc.Build.Dockerfile != "deploy/Dockerfile" {
				t.Errorf("compose %s builds %+v as %q, want deploy/Dockerfile as duet:dev", name, svc.Build, svc.Image)
			}
		}
		if svc.Image != "duet:dev" {
			continue
		}
		env := map[string]string{}
		for k, v := range svc.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		component, cfg := serveEnv{where: "compose " + name, args: svc.Command, env: env}.check(t)
		if component != name {
			t.Errorf("compose service %s runs the component %s", name, component)
		}
		if !svc.ReadOnly || svc.StopGracePeriod == nil || time.Duration(*svc.StopGracePeriod) < cfg.NotServingDelay+cfg.DrainTimeout+5*time.Second {
			t.Errorf("compose %s: read_only %v, stop_grace_period %v; want read-only, and time to stop (%v + %v + 5s)",
				name, svc.ReadOnly, svc.StopGracePeriod, cfg.NotServingDelay, cfg.DrainTimeout)
		}
		listens[name] = port(t, name, cfg.Listen)
		configs[name] = cfg
	}
	if want := system.Components; len(configs) != len(want) {
		t.Fatalf("compose runs %d components, want %v", len(configs), want)
	}
	if len(builders) != 1 {
		// Several builds of one tag race (and take six times as long).
		t.Errorf("compose services %v build the image, want one", builders)
	}
	for _, p := range project.Services[system.Gateway].Ports {
		if int(p.Target) != listens[system.Gateway] || p.HostIP != "127.0.0.1" {
			t.Errorf("compose gateway publishes %s:%s:%d, but listens on %d; want it on the host's loopback", p.HostIP, p.Published, p.Target, listens[system.Gateway])
		}
	}
	for name, cfg := range configs {
		if name != system.Gateway && !strings.HasPrefix(cfg.DatabaseURL, "postgres://") {
			t.Errorf("compose %s: database %q, want PostgreSQL", name, cfg.DatabaseURL)
		}
		for flag, target := range targets(cfg) {
			host, p := dnsTarget(t, "compose "+name, flag, target)
			if listens[host] != p {
				t.Errorf("compose %s: --%s %s, but %s listens on %d", name, flag, target, host, listens[host])
			}
			if !slices.Contains(project.Services[name].GetDependencies(), host) {
				t.Errorf("compose %s calls %s but does not depend on it", name, host)
			}
		}
		for _, dep := range []string{"postgres", "nats"} {
			uses := dep == "postgres" && cfg.DatabaseURL != "" || dep == "nats" && cfg.NATSURL != ""
			if uses && !slices.Contains(project.Services[name].GetDependencies(), dep) {
				t.Errorf("compose %s uses %s but does not depend on it", name, dep)
			}
		}
	}
	for _, name := range []string{system.User, system.Order, system.Payment, system.Notification} {
		if configs[name].NATSURL == "" {
			t.Errorf("compose %s has no NATS: its events would wait in its outbox", name)
		}
	}
}

// manifests are the Kubernetes objects of deploy/kubernetes, by kind and
// name, decoded strictly: a misspelt field is an error, not a field the
// cluster drops.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	budgets     map[string]*policyv1.PodDisruptionBudget
	namespaces  map[string]*corev1.Namespace
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	dir := filepath.Join(deployDir, "kubernetes")
	var kustomization struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
		Images     []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &kustomization); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(kustomization.Images) != 1 || kustomization.Images[0].Name != "duet" {
		t.Errorf("kustomization.yaml's images %+v, want the one duet image named", kustomization.Images)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(kustomization.Resources, base) {
			t.Errorf("%s is not among kustomization.yaml's resources", base)
		}
	}
	m := manifests{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, budgets: map[string]*policyv1.PodDisruptionBudget{}, namespaces: map[string]*corev1.Namespace{}}
	for _, file := range kustomization.Resources {
		raw, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s, document %d: %v", file, i+1, err)
			}
			var obj any
			name, key := head.Metadata.Name, head.APIVersion+" "+head.Kind
			switch key {
			case "apps/v1 Deployment":
				obj = add(m.deployments, name)
			case "v1 Service":
				obj = add(m.services, name)
			case "v1 ConfigMap":
				obj = add(m.configMaps, name)
			case "v1 Secret":
				obj = add(m.secrets, name)
			case "policy/v1 PodDisruptionBudget":
				obj = add(m.budgets, name)
			case "v1 Namespace":
				obj = add(m.namespaces, name)
			default:
				t.Fatalf("%s, document %d: %q is no kind this test knows", file, i+1, key)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s, document %d (%s %s): %v", file, i+1, head.Kind, head.Metadata.Name, err)
			}
			if ns, ok := obj.(interface{ GetNamespace() string }); ok && head.Kind != "Namespace" && ns.GetNamespace() != "duet" {
				t.Errorf("%s: %s %s is in namespace %q, want duet", file, head.Kind, head.Metadata.Name, ns.GetNamespace())
			}
		}
	}
	return m
}

// add makes a new object under name in objects, for a document to be
// decoded into.
func add[T any](objects map[string]*T, name string) *T {
	obj := new(T)
	objects[name] = obj
	return obj
}

// environment is a container's DUET_* environment as the cluster would
// give it: envFrom's ConfigMaps, then env, whose values may come from the
// manifests' ConfigMaps and Secrets.
func (m manifests) environment(t *testing.T, where string, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil || m.configMaps[from.ConfigMapRef.Name] == nil {
			t.Fatalf("%s: envFrom %+v is not a ConfigMap of the manifests (the test reads only those)", where, from)
		}
		cm := m.configMaps[from.ConfigMapRef.Name]
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				t.Fatalf("%s: %s from Secret %s, which the manifests lack", where, e.Name, ref.Name)
			}
			v, ok := s.StringData[ref.Key]
			if b, inData := s.Data[ref.Key]; !ok && inData {
				v, ok = string(b), true
			}
			if !ok {
				t.Fatalf("%s: %s from Secret %s's %s, which it lacks", where, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := m.configMaps[ref.Name]
			if !ok || cm.Data[ref.Key] == "" {
				t.Fatalf("%s: %s from ConfigMap %s's %s, which the manifests lack", where, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = cm.Data[ref.Key]
		case !strings.HasPrefix(e.Name, "DUET_"):
			// Not duet's (GOMEMLIMIT from a resourceFieldRef, say).
		default:
			t.Fatalf("%s: %s comes from %+v", where, e.Name, e.ValueFrom)
		}
	}
	return env
}

// selects reports whether selector picks pods labelled labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestDeployKubernetes: deploy/kubernetes decodes strictly into the
// Kubernetes API's types, runs every component with an environment
// `duet serve` accepts, probes the ports the components serve, gives
// them time to stop as they drain, and makes every peer target a
// headless Service (so kit/client balances over its pods) on the port
// its pods listen on.
func TestDeployKubernetes(t *testing.T) {
	m := loadManifests(t)
	if len(m.namespaces) != 1 || m.namespaces["duet"] == nil {
		t.Fatalf("namespaces %v, want duet", m.namespaces)
	}
	listens := map[string]int{} // Deployment → the port its component listens on
	configs := map[string]system.ServeConfig{}
	for name, d := range m.deployments {
		where := "Deployment " + name
		spec := d.Spec.Template.Spec
		if d.Namespace != "duet" || d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("%s: namespace %q, selector %v does not pick its pods %v", where, d.Namespace, d.Spec.Selector, d.Spec.Template.Labels)
		}
		if len(spec.Containers) != 1 {
			t.Fatalf("%s: %d containers, want duet alone", where, len(spec.Containers))
		}
		c := spec.Containers[0]
		component, cfg := serveEnv{where: where, args: c.Args, env: m.environment(t, where, c)}.check(t)
		if component != name {
			t.Errorf("%s runs the component %s", where, component)
		}
		configs[name], listens[name] = cfg, port(t, where, cfg.Listen)

		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		serving := "grpc"
		if name == system.Gateway {
			serving = "http"
		}
		if int(ports[serving]) != listens[name] || cfg.MetricsAddr == "" || int(ports["metrics"]) != port(t, where, cfg.MetricsAddr) {
			t.Errorf("%s: ports %v, but it listens on %s and serves /readyz on %q", where, ports, cfg.Listen, cfg.MetricsAddr)
		}
		// Liveness on /readyz would restart the gateway whenever a
		// backend is down.
		for _, probe := range []struct {
			kind, path string
			p          *corev1.Probe
		}{{"startup", "/healthz", c.StartupProbe}, {"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}} {
			if p := probe.p; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "metrics" || p.HTTPGet.Path != probe.path {
				t.Errorf("%s: %s probe %+v, want %s on the metrics port", where, probe.kind, p, probe.path)
			}
		}
		// Kubernetes' defaults: every 10 s, 3 failures.
		probeTime := func(p *corev1.Probe) time.Duration {
			if p == nil {
				return 0
			}
			return time.Duration(cmp.Or(p.PeriodSeconds, 10)*cmp.Or(p.FailureThreshold, 3)) * time.Second
		}
		if d := probeTime(c.ReadinessProbe); d > cfg.NotServingDelay {
			t.Errorf("%s: readiness takes %v to see the pod stopping, longer than --not-serving-delay %v: calls would reach a draining pod",
				where, d, cfg.NotServingDelay)
		}
		// A replica waits up to 5 minutes for another's migration lock
		// before it listens (README, "Several replicas").
		if d := probeTime(c.StartupProbe); d < 5*time.Minute {
			t.Errorf("%s: the startup probe gives up after %v, before a migration lock's 5 minutes", where, d)
		}
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if spec.TerminationGracePeriodSeconds != nil {
			grace = *spec.TerminationGracePeriodSeconds
		}
		if need := cfg.NotServingDelay + cfg.DrainTimeout + 5*time.Second; time.Duration(grace)*time.Second < need {
			t.Errorf("%s: terminationGracePeriodSeconds %d, less than stopping takes (%v)", where, grace, need)
		}
		sc := c.SecurityContext
		if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot ||
			sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: want a non-root pod with a read-only root filesystem and no privilege escalation", where)
		}
		if name != system.Gateway && !strings.HasPrefix(cfg.DatabaseURL, "postgres://") {
			t.Errorf("%s: database %q, want PostgreSQL", where, cfg.DatabaseURL)
		}
		if budget := m.budgets[name]; budget == nil || budget.Spec.Selector == nil || !selects(budget.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("%s has no PodDisruptionBudget of its own", where)
		}
	}
	for _, c := range system.Components {
		if m.deployments[c] == nil {
			t.Errorf("no Deployment runs %s", c)
		}
	}
	for _, name := range []string{system.User, system.Order, system.Payment, system.Notification} {
		if configs[name].NATSURL == "" {
			t.Errorf("Deployment %s has no NATS: its events would wait in its outbox", name)
		}
	}

	// Each Service picks one Deployment's pods, on a port they have.
	for name, s := range m.services {
		var picked []string
		for dname, d := range m.deployments {
			if selects(s.Spec.Selector, d.Spec.Template.Labels) {
				picked = append(picked, dname)
			}
		}
		if len(picked) != 1 || picked[0] != name {
			t.Errorf("Service %s picks the pods of %v, want its own Deployment's", name, picked)
			continue
		}
		named := map[string]bool{}
		for _, p := range m.deployments[name].Spec.Template.Spec.Containers[0].Ports {
			named[p.Name] = true
		}
		for _, p := range s.Spec.Ports {
			if !named[p.TargetPort.StrVal] {
				t.Errorf("Service %s: port %s targets %q, no port of its pods", name, p.Name, p.TargetPort.String())
			}
		}
	}
	for name, cfg := range configs {
		for flag, target := range targets(cfg) {
			host, p := dnsTarget(t, "Deployment "+name, flag, target)
			s := m.services[host]
			if s == nil {
				t.Errorf("Deployment %s: --%s %s names no Service", name, flag, target)
				continue
			}
			if s.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("Service %s is not headless: %s's calls to it would all go to one pod per connection", host, name)
			}
			if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == p }) || listens[host] != p {
				t.Errorf("Deployment %s: --%s %s, but Service %s's ports are %v and its pods listen on %d", name, flag, target, host, s.Spec.Ports, listens[host])
			}
		}
	}
}

// TestDeployDockerfile: the image is built with go.mod's Go, from
// ./cmd/duet, statically, and runs as a user other than root.
func TestDeployDockerfile(t *testing.T) {
	dockerfile, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	for _, want := range []string{
		fmt.Sprintf("FROM golang:%s-", goVersion[1]),
		"CGO_ENABLED=0 go build",
		"./cmd/duet",
		"USER 65532:65532",
		`ENTRYPOINT ["/usr/local/bin/duet"]`,
	} {
		if !bytes.Contains(dockerfile, []byte(want)) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
}
