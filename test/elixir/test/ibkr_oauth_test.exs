defmodule IbkrOauthTest do
  # Idiomatic use of :ibkr_oauth from Elixir: bring-your-own-HTTP signing
  # checked against ibind's vectors, and a session in a supervision tree
  # talking HTTPS to the local fake IBKR server.
  use ExUnit.Case, async: false

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
end
