package authn_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/authn"
	"github.com/duetkit/duet/kit/authn/devissuer"
	"github.com/duetkit/duet/kit/server"
)

// A server checks end users' tokens as its Authenticator; a handler reads
// whom a call was for. The issuer here stands in for an identity
// provider, whose key set the server would read instead.
func Example() {
	ctx := context.Background()
	issuer, err := devissuer.New("https://id.example", "key-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, err := os.MkdirTemp("", "authn")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	keysFile := filepath.Join(dir, "keys.json")
	if err := issuer.WriteKeySet(keysFile); err != nil {
		fmt.Println(err)
		return
	}

	verifier, err := authn.Load(ctx, authn.Config{KeysFile: keysFile, Issuer: "https://id.example", Audience: "shop"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer verifier.Close()
	srv, err := server.New(server.Config{Name: "example", Authenticator: verifier, DisableAccessLog: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	testpb.RegisterTestServiceServer(srv, echo{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(lis)
	defer srv.Shutdown(ctx)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)

	_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{})
	fmt.Println("without a token:", status.Code(err), apierr.Reason(err))

	token, err := issuer.Sign(devissuer.Claims{Subject: "user-42", Audience: []string{"shop"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	resp, err := client.UnaryCall(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &testpb.SimpleRequest{})
	fmt.Println("with a token:", status.Code(err), "for", resp.GetUsername())
	// Output:
	// without a token: Unauthenticated TOKEN_MISSING
	// with a token: OK for user-42
}
