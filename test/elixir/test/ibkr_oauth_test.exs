defmodule IbkrOauthTest do
  # Idiomatic use of :ibkr_oauth from Elixir: a session as a child of your
  # supervision tree talking HTTPS to the local fake IBKR server,
  # :ibkr_oauth.request/4, and bring-your-own-HTTP signing with sign/3
  # (checked against ibind's vectors, and accepted by the fake server).
  use ExUnit.Case, async: false
  @moduletag :capture_log

  defp query_suffix(:undefined), do: ""

  defp query_suffix(pairs) do
    "?" <> Enum.map_join(pairs, "&", fn [k, v] -> URI.encode(k, &URI.char_unreserved?/1) <> "=" <> URI.encode(v, &URI.char_unreserved?/1) end)
  end

  describe "bring your own HTTP client" do
    test "lst_request/lst_complete/sign reproduce ibind byte for byte" do
      vectors = :ibkr_test_lib.vectors(:public)
      {:ok, session} = :ibkr_oauth.start_link(:ibkr_test_lib.vector_config(:public))

      for c <- Enum.take(vectors.cases, 4) do
        pins = %{nonce: c.nonce, timestamp: c.timestamp, dh_random: c.dh_random}
        assert {:ok, %{method: "POST", url: url, authorization: auth}} = :ibkr_oauth.lst_request(session, pins)
        assert url == vectors.lst_url
        assert auth == c.lst_authorization

        expires = System.system_time(:millisecond) + 86_400_000

        assert {:ok, %{expires_at: ^expires}} =
                 :ibkr_oauth.lst_complete(session, %{
                   diffie_hellman_response: c.diffie_hellman_response,
                   live_session_token_signature: c.live_session_token_signature,
                   live_session_token_expiration: expires
                 })

        assert {:ok, %{token: token}} = :ibkr_oauth.live_session_token(session)
        assert token == c.live_session_token

        for r <- c.requests do
          opts = %{nonce: r.nonce, timestamp: r.timestamp}
          assert {:ok, r.authorization} == :ibkr_oauth.sign(session, r.method, r.url <> query_suffix(r.query), opts)
        end
      end

      :ok = :ibkr_oauth.stop(session)
    end

    test "bad input is an error tuple, never a crash" do
      {:ok, session} = :ibkr_oauth.start_link(:ibkr_test_lib.vector_config(:public))
      assert {:error, :not_authenticated} = :ibkr_oauth.sign(session, :get, "https://api.ibkr.com/v1/api/tickle")
      assert {:error, _} = :ibkr_oauth.sign(session, :get, 42)
      assert {:error, :no_pending_handshake} =
               :ibkr_oauth.lst_complete(session, %{
                 diffie_hellman_response: "02",
                 live_session_token_signature: "00",
                 live_session_token_expiration: 0
               })

      bad = Map.put(:ibkr_test_lib.vector_config(:public), :dh_prime, "not hex")
      assert {:error, {:bad_config, :dh_prime, _}} = :ibkr_oauth.start_link(bad)
      :ok = :ibkr_oauth.stop(session)
    end
  end

  # The fake IBKR server (real TLS with its own CA, real signature and DH
  # checks) for the tests that talk HTTPS.
  defp start_fake_server(_ctx) do
    {:ok, info} = :ibkr_fake_server.start_from_vectors(:public, %{})
    on_exit(fn -> :ibkr_fake_server.stop() end)
    config = Map.put(info.config, :brokerage_session, true)
    %{config: config, base_url: info.base_url, ca_file: info.ca_file}
  end

  @order ~s({"orders":[{"conid":265598,"orderType":"LMT","price":150.0,"side":"BUY","quantity":10,"tif":"DAY"}]})

  describe "a session in your supervision tree" do
    setup :start_fake_server

    test "{:ibkr_oauth, config} child: accounts, positions, an order; restarted after a crash", ctx do
      {:ok, sup} = Supervisor.start_link([{:ibkr_oauth, ctx.config}], strategy: :one_for_one)
      assert [{:ibkr_oauth, session, :worker, [:ibkr_oauth_session]}] = Supervisor.which_children(sup)

      assert {:ok, %{status: 200, body: accounts}} =
               :ibkr_oauth.request(session, :get, "/portfolio/accounts", %{})

      assert [_, "U1234567"] = Regex.run(~r/"accountId":"([^"]+)"/, accounts)

      assert {:ok, %{status: 200, body: positions}} =
               :ibkr_oauth.request(session, :get, "/portfolio/U1234567/positions/0", %{})

      assert positions =~ ~s("contractDesc":"AAPL")

      assert {:ok, %{status: 200, body: placed}} =
               :ibkr_oauth.request(session, :post, "/iserver/account/U1234567/orders", %{
                 body: @order,
                 headers: [{"content-type", "application/json"}]
               })

      assert [_, order_id] = Regex.run(~r/"order_id":"([^"]+)"/, placed)
      assert {:ok, %{status: 200, body: orders}} = :ibkr_oauth.request(session, :get, "/iserver/account/orders", %{})
      assert orders =~ order_id
      assert %{handshakes: 1, ssodh_inits: 1} = :ibkr_fake_server.stats()

      # A crashed session is replaced by the supervisor and authenticates again.
      ref = Process.monitor(session)
      Process.exit(session, :kill)
      assert_receive {:DOWN, ^ref, :process, ^session, :killed}
      assert [{:ibkr_oauth, new_session, :worker, _}] = Supervisor.which_children(sup)
      assert is_pid(new_session) and new_session != session
      assert {:ok, %{status: 200}} = :ibkr_oauth.request(new_session, :get, "/portfolio/accounts", %{})
      assert %{handshakes: 2} = :ibkr_fake_server.stats()

      # Shutting the tree down logs the session out.
      :ok = Supervisor.stop(sup)
      assert %{logouts: 1} = :ibkr_fake_server.stats()
    end

    test "a registered session next to another one (own ids), secrets sealed in both specs", ctx do
      children = [
        :ibkr_oauth.child_spec({:local, IbkrOauthTest.Trading}, ctx.config),
        Supervisor.child_spec({:ibkr_oauth, Map.put(ctx.config, :brokerage_session, false)}, id: :reporting)
      ]

      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)

      # What a supervisor report would print: neither the secret nor a key.
      {:pem, signature_pem} = ctx.config.signature_key

      for id <- [IbkrOauthTest.Trading, :reporting] do
        {:ok, child} = :supervisor.get_childspec(sup, id)
        printed = inspect(child, limit: :infinity, printable_limit: :infinity)
        refute printed =~ ctx.config.access_token_secret
        refute printed =~ binary_part(signature_pem, 100, 64)
      end
      assert {:ok, %{status: 200}} = :ibkr_oauth.request(IbkrOauthTest.Trading, :get, "/iserver/auth/status", %{})
      {:reporting, reporting, :worker, _} = List.keyfind(Supervisor.which_children(sup), :reporting, 0)
      assert reporting != Process.whereis(IbkrOauthTest.Trading)
      assert {:ok, %{status: 200}} = :ibkr_oauth.request(reporting, :get, "/portfolio/accounts", %{})
      # Two sessions, two handshakes; only the first opened a brokerage session.
      assert %{handshakes: 2, ssodh_inits: 1} = :ibkr_fake_server.stats()
      :ok = Supervisor.stop(sup)
      refute Process.whereis(IbkrOauthTest.Trading)
    end
  end

  describe "one session per credential across a cluster" do
    setup :start_fake_server

    test "a {:cluster, name} child: reached as {:global, name}, stats names its node, stop logs out", ctx do
      name = IbkrOauthTest.Cluster
      config = Map.put(ctx.config, :auto_authenticate, true)
      {:ok, sup} = Supervisor.start_link([:ibkr_oauth.child_spec({:cluster, name}, config)], strategy: :one_for_one)

      assert {:ok, %{status: 200}} = :ibkr_oauth.request({:global, name}, :get, "/portfolio/accounts", %{})
      here = node()
      assert %{node: ^here, handshakes: 1} = :ibkr_oauth.stats({:global, name})

      {:ok, child} = :supervisor.get_childspec(sup, {:cluster, name})
      refute inspect(child, limit: :infinity, printable_limit: :infinity) =~ ctx.config.access_token_secret

      # The claimant stops its session first (logout); no other node takes over here.
      :ok = Supervisor.stop(sup)
      assert :undefined == :global.whereis_name(name)
      assert %{logouts: 1} = :ibkr_fake_server.stats()
    end
  end

  describe "bring your own HTTP client: sign/3 with :httpc" do
    setup :start_fake_server

    setup ctx do
      {:ok, session} = :ibkr_oauth.start_link(ctx.config)
      on_exit(fn -> :ibkr_oauth.stop(session) end)
      {:ok, _} = :ibkr_oauth.authenticate(session)
      %{session: session}
    end

    defp httpc(method, url, auth, ca_file, body \\ nil) do
      headers = [{~c"authorization", String.to_charlist(auth)}]
      ssl = [verify: :verify_peer, cacertfile: String.to_charlist(ca_file)]
      request = if body, do: {String.to_charlist(url), headers, ~c"application/json", body}, else: {String.to_charlist(url), headers}
      {:ok, {{_, status, _}, _headers, resp}} = :httpc.request(method, request, [ssl: ssl], body_format: :binary)
      {status, resp}
    end

    test "the server accepts what sign/3 produced, for GET with a query and POST", ctx do
      url = ctx.base_url <> "/portfolio/accounts"
      {:ok, auth} = :ibkr_oauth.sign(ctx.session, :get, url)
      assert {200, body} = httpc(:get, url, auth, ctx.ca_file)
      assert body =~ ~s("accountId":"U7654321")

      url = ctx.base_url <> "/echo?symbol=AAPL&name=a%20b"
      {:ok, auth} = :ibkr_oauth.sign(ctx.session, :get, url)
      assert {200, echo} = httpc(:get, url, auth, ctx.ca_file)
      assert echo =~ ~s(["name","a b"])

      url = ctx.base_url <> "/echo"
      {:ok, auth} = :ibkr_oauth.sign(ctx.session, :post, url)
      assert {200, echo} = httpc(:post, url, auth, ctx.ca_file, ~s({"x":1}))
      assert echo =~ ~s("method":"POST")
      stats = :ibkr_fake_server.stats()
      assert {0, 0} == {Map.get(stats, :bad_signatures, 0), Map.get(stats, :nonce_reuse, 0)}
    end

    test "the server refuses a header signed for another URL or method, and a replay", ctx do
      accounts = ctx.base_url <> "/portfolio/accounts"
      {:ok, auth} = :ibkr_oauth.sign(ctx.session, :get, accounts)
      assert {401, _} = httpc(:get, ctx.base_url <> "/portfolio/U1234567/positions/0", auth, ctx.ca_file)
      {:ok, auth} = :ibkr_oauth.sign(ctx.session, :get, accounts)
      assert {401, _} = httpc(:post, accounts, auth, ctx.ca_file, "{}")
      assert %{bad_signatures: 2} = :ibkr_fake_server.stats()

      {:ok, auth} = :ibkr_oauth.sign(ctx.session, :get, accounts)
      assert {200, _} = httpc(:get, accounts, auth, ctx.ca_file)
      assert {401, _} = httpc(:get, accounts, auth, ctx.ca_file)
      assert %{nonce_reuse: 1} = :ibkr_fake_server.stats()
    end
  end
end
